"""Malformed plan files, one per rule: each must be refused with that rule, at that line.

Pure data, shared by the loader's tests and the CLI's (exit 2, no traceback, nothing written).
A case is ``(case_id, suffix, content, rule, line)``: ``content`` is the file's text or bytes;
``None`` means the file does not exist, and the suffix ``"/"`` makes the path a directory.
``line`` is where the first error with ``rule`` must point (None: no line, or not checked).
Use `write_case` to put a case on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

Case: TypeAlias = tuple[str, str, str | bytes | None, str, int | None]

OK_TASK = "  - id: ok\n    agent: scripted\n    script: [{say: hi}]\n"
PRESET_TASK = "  - id: a\n    agent: claude-code\n    prompt: hi\n"


def _billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\ntasks: *a9\n"


MALFORMED: list[Case] = [
    # --- the graph ---
    ("cycle", ".yaml",
     "tasks:\n"
     "  - {id: a, agent: scripted, script: [{say: a}], depends_on: [c]}\n"
     "  - {id: b, agent: scripted, script: [{say: b}], depends_on: [a]}\n"
     "  - {id: c, agent: scripted, script: [{say: c}], depends_on: [b]}\n",
     "cycle", 2),
    ("self-dependency", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: [{say: a}]\n    depends_on: [a]\n",
     "cycle", 5),
    ("unknown-dependency", ".yaml",
     "tasks:\n" + OK_TASK.replace("ok", "models") + "  - id: api\n    agent: scripted\n"
     "    script: [{say: x}]\n    depends_on: [models, modles]\n",
     "unknown-dependency", 8),
    ("duplicate-id", ".yaml",
     "tasks:\n" + OK_TASK + OK_TASK,
     "duplicate-id", 5),
    ("duplicate-id-case", ".yaml",
     "tasks:\n" + OK_TASK + "  - id: OK\n    agent: scripted\n    script: [{say: hi}]\n",
     "duplicate-id", 5),
    ("batch-tasks-cycle", ".yaml",
     "batches:\n  - name: one\n    tasks:\n      - {id: a, agent: scripted, script: [{say: a}],"
     " depends_on: [b]}\n  - name: two\n    tasks:\n      - {id: b, agent: scripted,"
     " script: [{say: b}]}\n",
     "cycle", 4),
    # --- YAML structure and safety ---
    ("duplicate-key-top", ".yaml",
     "name: one\nname: two\ntasks:\n" + OK_TASK,
     "duplicate-key", 2),
    ("duplicate-key-task", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: [{say: a}]\n    id: b\n",
     "duplicate-key", 5),
    ("yaml-syntax", ".yaml",
     "tasks:\n  - id: a\n    depends_on: [b, c\n  - id: b\n",
     "syntax", 4),
    ("yaml-bad-indent", ".yaml",
     "tasks:\n  - id: a\n   agent: scripted\n",
     "syntax", 3),
    ("yaml-two-documents", ".yaml",
     "tasks:\n" + OK_TASK + "---\ntasks:\n" + OK_TASK,
     "syntax", 5),
    ("yaml-control-char", ".yaml",
     "name: a\x01b\ntasks:\n" + OK_TASK,
     "syntax", 1),
    ("billion-laughs", ".yaml", _billion_laughs(), "alias-bomb", None),
    ("recursive-alias", ".yaml", "tasks: &t [*t]\n", "recursive-alias", 1),
    ("nesting-200-deep", ".yaml", "tasks: " + "[" * 200 + "]" * 200 + "\n", "too-deep", 1),
    ("python-tag", ".yaml",
     "name: !!python/object/apply:os.system [echo hacked]\ntasks:\n" + OK_TASK,
     "unsupported-tag", 1),
    ("huge-integer", ".yaml",
     "limits:\n  max_agents: " + "9" * 5000 + "\ntasks:\n" + OK_TASK,
     "bad-value", 2),
    ("not-utf8", ".yaml", b"name: caf\xe9\ntasks: []\n", "not-utf8", 1),
    ("not-utf8-later-line", ".yaml",
     b"tasks:\n  - id: a\n    prompt: \xff\xfe\n", "not-utf8", 3),
    ("unknown-extension-not-yaml", ".txt", "tasks: [\n", "syntax", 2),
    ("top-level-list", ".yaml", "- id: a\n  prompt: hi\n", "wrong-type", 1),
    ("top-level-scalar", ".yaml", "just some words\n", "wrong-type", 1),
    # --- the file itself ---
    ("file-not-found", ".yaml", None, "file-not-found", None),
    ("directory", "/", "", "not-a-file", None),
    ("empty-file", ".yaml", "", "empty-plan", 1),
    ("only-comments", ".yaml", "# nothing here yet\n", "empty-plan", 1),
    ("empty-task-list", ".yaml", "name: x\ntasks: []\n", "empty-plan", 2),
    ("no-tasks", ".yaml", "name: x\nlimits: {max_agents: 3}\n", "empty-plan", 1),
    ("empty-batches", ".yaml", "batches: []\n", "empty-plan", 1),
    ("tasks-and-batches", ".yaml",
     "tasks:\n" + OK_TASK + "batches:\n  - name: b\n    tasks:\n" + OK_TASK.replace("ok", "ok2"),
     "tasks-and-batches", 5),
    # --- fields and types ---
    ("unknown-field-top", ".yaml", "taks:\n" + OK_TASK, "unknown-field", 1),
    ("unknown-field-task", ".yaml",
     "tasks:\n" + OK_TASK + "  - id: b\n    agent: scripted\n    script: [{say: b}]\n"
     "    depend_on: [ok]\n",
     "unknown-field", 8),
    ("unknown-field-limits", ".yaml",
     "limits:\n  max_concurency: 4\ntasks:\n" + OK_TASK, "unknown-field", 2),
    ("unknown-field-fixer", ".yaml",
     "fixer:\n  agent: scripted\n  script: [{say: fix}]\n  depends_on: [a]\ntasks:\n" + OK_TASK,
     "unknown-field", 4),
    ("depends-on-number", ".yaml",
     "tasks:\n" + OK_TASK + "  - id: b\n    agent: scripted\n    script: [{say: b}]\n"
     "    depends_on: 3\n",
     "wrong-type", 8),
    ("timeout-bool", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: [{say: a}]\n    timeout: true\n",
     "wrong-type", 5),
    ("tasks-is-mapping", ".yaml", "tasks:\n  id: a\n  prompt: hi\n", "wrong-type", 2),
    ("task-is-string", ".yaml", "tasks:\n  - build the thing\n", "wrong-type", 2),
    ("env-not-mapping", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: [{say: a}]\n    env: [A=1]\n",
     "wrong-type", 5),
    ("merge-not-mapping", ".yaml", "tasks:\n  - <<: 3\n    id: a\n", "wrong-type", 2),
    ("missing-id", ".yaml",
     "tasks:\n" + OK_TASK + "  - agent: scripted\n    script: [{say: b}]\n", "missing-id", 5),
    ("nul-in-command", ".yaml",
     'tasks:\n  - id: a\n    agent: command\n    command: ["echo", "a\\0b"]\n', "bad-value", 4),
    # --- ids ---
    ("id-dot-dot-slash", ".yaml",
     "tasks:\n  - id: ../x\n    agent: scripted\n    script: [{say: a}]\n", "invalid-id", 2),
    ("id-absolute", ".yaml",
     "tasks:\n  - id: /etc/passwd\n    agent: scripted\n    script: [{say: a}]\n", "invalid-id", 2),
    ("id-slash", ".yaml",
     "tasks:\n  - id: a/b\n    agent: scripted\n    script: [{say: a}]\n", "invalid-id", 2),
    ("id-empty", ".yaml",
     'tasks:\n  - id: ""\n    agent: scripted\n    script: [{say: a}]\n', "invalid-id", 2),
    ("id-300-chars", ".yaml",
     "tasks:\n  - id: " + "a" * 300 + "\n    agent: scripted\n    script: [{say: a}]\n",
     "invalid-id", 2),
    ("id-control-char", ".yaml",
     'tasks:\n  - id: "a\\x1b[31mb"\n    agent: scripted\n    script: [{say: a}]\n',
     "invalid-id", 2),
    ("id-newline", ".yaml",
     'tasks:\n  - id: "a\\nb"\n    agent: scripted\n    script: [{say: a}]\n', "invalid-id", 2),
    ("id-leading-dash", ".yaml",
     "tasks:\n  - id: -rf\n    agent: scripted\n    script: [{say: a}]\n", "invalid-id", 2),
    ("id-with-the-separator", ".yaml",
     "tasks:\n  - id: api+2\n    agent: scripted\n    script: [{say: a}]\n", "invalid-id", 2),
    ("id-report", ".yaml",
     "tasks:\n  - id: REPORT\n    agent: scripted\n    script: [{say: a}]\n", "reserved-id", 2),
    # --- limits and durations ---
    ("concurrency-zero", ".yaml",
     "limits:\n  max_concurrency: 0\ntasks:\n" + OK_TASK, "bad-limit", 2),
    ("agents-negative", ".yaml", "limits:\n  max_agents: -1\ntasks:\n" + OK_TASK, "bad-limit", 2),
    ("depth-negative", ".yaml", "limits:\n  max_depth: -1\ntasks:\n" + OK_TASK, "bad-limit", 2),
    ("budget-zero", ".yaml", "limits:\n  budget_usd: 0\ntasks:\n" + OK_TASK, "bad-limit", 2),
    ("concurrency-fraction", ".yaml",
     "limits:\n  max_concurrency: 2.5\ntasks:\n" + OK_TASK, "wrong-type", 2),
    ("bad-duration", ".yaml", "defaults:\n  timeout: 20x\ntasks:\n" + OK_TASK, "bad-duration", 2),
    ("zero-timeout", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: [{say: a}]\n    timeout: 0\n",
     "bad-duration", 5),
    ("infinite-timeout", ".yaml",
     "defaults:\n  stall_timeout: .inf\ntasks:\n" + OK_TASK, "bad-duration", 2),
    ("bad-sleep", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script:\n      - sleep: soon\n",
     "bad-duration", 5),
    ("bad-price", ".yaml",
     "prices:\n  m1: {input: -3, output: 15}\ntasks:\n" + OK_TASK, "bad-price", 2),
    # --- agents ---
    ("unknown-agent", ".yaml",
     "tasks:\n  - id: a\n    agent: claud\n    prompt: hi\n", "unknown-agent", 3),
    ("unknown-default-agent", ".yaml",
     "defaults:\n  agent: gpt\ntasks:\n  - id: a\n    prompt: hi\n", "unknown-agent", 2),
    ("missing-command", ".yaml",
     "tasks:\n  - id: a\n    agent: command\n    prompt: hi\n", "missing-command", 2),
    ("missing-prompt", ".yaml", "tasks:\n  - id: a\n    agent: claude\n", "missing-prompt", 2),
    ("missing-prompt-preset", ".yaml",
     "tasks:\n  - id: a\n    agent: codex\n    prompt: '  '\n", "missing-prompt", 2),
    ("missing-script", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: []\n", "missing-script", 2),
    ("unknown-step", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script:\n      - sya: hello\n",
     "unknown-step", 5),
    ("two-key-step", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script:\n      - {say: hi, sleep: 1}\n",
     "bad-step", 5),
    ("write-outside", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script:\n"
     "      - write: {path: ../../etc/passwd, content: x}\n",
     "bad-path", 5),
    ("unclosed-quote-command", ".yaml",
     "tasks:\n  - id: a\n    agent: command\n    command: my-agent --message 'hi\n",
     "bad-command", 4),
    ("bad-env-name", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script: [{say: a}]\n    env: {1BAD: x}\n",
     "bad-env", 5),
    # --- preset agents and their templates ---
    ("permission-mode-list", ".yaml",
     "tasks:\n" + PRESET_TASK + "    permission_mode: [acceptEdits]\n", "wrong-type", 5),
    ("permission-mode-not-a-word", ".yaml",
     "tasks:\n" + PRESET_TASK + "    permission_mode: accept edits\n", "bad-value", 5),
    ("allowed-tools-text", ".yaml",
     "tasks:\n" + PRESET_TASK + "    allowed_tools: Edit\n", "wrong-type", 5),
    ("allowed-tools-empty-entry", ".yaml",
     "tasks:\n" + PRESET_TASK + "    allowed_tools:\n      - Edit\n      - ''\n",
     "bad-value", 7),
    ("args-text", ".yaml", "tasks:\n" + PRESET_TASK + "    args: --full-auto\n", "wrong-type", 5),
    ("args-mapping-entry", ".yaml",
     "tasks:\n" + PRESET_TASK + "    args:\n      - --effort\n      - {level: low}\n",
     "wrong-type", 7),
    ("defaults-args-number", ".yaml",
     "defaults:\n  agent: codex\n  args: 3\ntasks:\n  - {id: a, prompt: hi}\n", "wrong-type", 3),
    ("defaults-permission-mode-mapping", ".yaml",
     "defaults:\n  permission_mode: {mode: plan}\ntasks:\n" + OK_TASK, "wrong-type", 2),
    ("args-on-command-task", ".yaml",
     "tasks:\n  - id: a\n    agent: command\n    command: [my-agent]\n    args: [-v]\n",
     "not-for-agent", 5),
    ("permission-mode-on-codex", ".yaml",
     "tasks:\n  - id: a\n    agent: codex\n    prompt: hi\n    permission_mode: plan\n",
     "not-for-agent", 5),
    ("unknown-preset", ".yaml",
     "presets:\n  claude-code: {command: [claude, -p, '{flags}', --, '{prompt}']}\n"
     "  codx: {command: [codex, exec, '{prompt}']}\ntasks:\n" + OK_TASK,
     "unknown-preset", 3),
    ("unknown-preset-agent-kind", ".yaml",
     "presets:\n  command:\n    command: [sh, -c]\ntasks:\n" + OK_TASK, "unknown-preset", 2),
    ("presets-not-mapping", ".yaml", "presets: [codex]\ntasks:\n" + OK_TASK, "wrong-type", 1),
    ("preset-bare-list", ".yaml",
     "presets:\n  codex: [codex, exec, '{prompt}']\ntasks:\n" + OK_TASK, "wrong-type", 2),
    ("preset-command-text", ".yaml",
     "presets:\n  aider:\n    command: aider --yes-always\ntasks:\n" + OK_TASK, "wrong-type", 3),
    ("preset-command-empty", ".yaml",
     "presets:\n  aider:\n    command: []\ntasks:\n" + OK_TASK, "bad-command", 3),
    ("preset-program-blank", ".yaml",
     "presets:\n  aider:\n    command: ['  ', '{prompt}']\ntasks:\n" + OK_TASK, "bad-command", 3),
    ("preset-without-command", ".yaml",
     "presets:\n  codex: {}\ntasks:\n" + OK_TASK, "missing-command", 2),
    ("preset-unknown-field", ".yaml",
     "presets:\n  codex:\n    command: [codex, exec, '{prompt}']\n    parser: lines\ntasks:\n"
     + OK_TASK,
     "unknown-field", 4),
    ("fix-timeouts-text", ".yaml",
     "fixer:\n  agent: scripted\n  script: [{say: fix}]\n  fix_timeouts: sometimes\ntasks:\n"
     + OK_TASK,
     "wrong-type", 4),
    ("fix-timeouts-on-task", ".yaml",
     "tasks:\n" + OK_TASK + "    fix_timeouts: true\n", "unknown-field", 5),
    # --- build and batches ---
    ("build-no-command", ".yaml",
     "build:\n  timeout: 1m\ntasks:\n" + OK_TASK, "missing-command", 2),
    ("build-after-unknown", ".yaml",
     "build:\n  command: make\n  after: [okk]\ntasks:\n" + OK_TASK, "unknown-after", 3),
    ("build-negative-fix-cycles", ".yaml",
     "build:\n  command: make\n  max_fix_cycles: -1\ntasks:\n" + OK_TASK, "bad-value", 3),
    ("duplicate-batch", ".yaml",
     "batches:\n  - name: b\n    tasks:\n" + OK_TASK.replace("  - ", "      - ").replace(
         "\n    ", "\n        ") + "  - name: b\n    tasks:\n" + OK_TASK.replace(
         "  - id: ok", "      - id: ok2").replace("\n    ", "\n        "),
     "duplicate-batch", 7),
    ("empty-batch", ".yaml", "batches:\n  - name: b\n    tasks: []\n", "empty-batch", 2),
    ("batch-name-path", ".yaml",
     "batches:\n  - name: ../b\n    tasks:\n      - {id: a, prompt: hi}\n", "invalid-name", 2),
    ("plan-name-escape", ".yaml", 'name: "\\e[2Jhi"\ntasks:\n' + OK_TASK, "bad-name", 1),
    ("write-without-content", ".yaml",
     "tasks:\n  - id: a\n    agent: scripted\n    script:\n      - write: {path: a.txt}\n",
     "missing-field", 5),
    # --- TOML ---
    ("toml-syntax", ".toml", 'name = "x"\n[[tasks]]\nid = "a\n', "syntax", 3),
    ("toml-duplicate-key", ".toml",
     '[[tasks]]\nid = "a"\nid = "b"\nagent = "scripted"\n', "duplicate-key", 3),
    ("toml-unknown-field", ".toml",
     '[[tasks]]\nid = "a"\nagent = "scripted"\nscript = [{say = "a"}]\n'
     'depend_on = ["b"]\n',
     "unknown-field", 5),
    ("toml-cycle", ".toml",
     '[[tasks]]\nid = "a"\nagent = "scripted"\nscript = [{say = "a"}]\ndepends_on = ["b"]\n\n'
     '[[tasks]]\nid = "b"\nagent = "scripted"\nscript = [{say = "b"}]\ndepends_on = ["a"]\n',
     "cycle", 5),
    ("toml-invalid-id", ".toml",
     '[[tasks]]\nid = "ok"\nagent = "scripted"\nscript = [{say = "a"}]\n\n'
     '[[tasks]]\nid = "../../x"\nagent = "scripted"\nscript = [{say = "a"}]\n',
     "invalid-id", 7),
    ("toml-bad-limit", ".toml",
     'name = "x"\n\n[limits]\nmax_concurrency = 0\n\n[[tasks]]\nid = "a"\nprompt = "hi"\n',
     "bad-limit", 4),
    ("toml-tasks-table", ".toml", '[tasks]\nid = "a"\nprompt = "hi"\n', "wrong-type", 1),
    ("toml-inline-unknown-agent", ".toml",
     'tasks = [\n  {id = "a", prompt = "hi"},\n  {id = "b", agent = "cluade", prompt = "hi"},\n]\n',
     "unknown-agent", 3),
    ("toml-unknown-preset", ".toml",
     '[presets.aidr]\ncommand = ["aider", "--message={prompt}"]\n\n'
     '[[tasks]]\nid = "a"\nagent = "aider"\nprompt = "hi"\n',
     "unknown-preset", 1),
    ("toml-preset-command-text", ".toml",
     '[presets.codex]\ncommand = "codex exec"\n\n[[tasks]]\nid = "a"\nprompt = "hi"\n',
     "wrong-type", 2),
    ("toml-args-text", ".toml",
     '[[tasks]]\nid = "a"\nagent = "codex"\nprompt = "hi"\nargs = "--full-auto"\n',
     "wrong-type", 5),
    ("toml-allowed-tools-number", ".toml",
     '[defaults]\nagent = "claude-code"\nallowed_tools = [1, ""]\n\n'
     '[[tasks]]\nid = "a"\nprompt = "hi"\n',
     "bad-value", 3),
    ("toml-fix-timeouts-number", ".toml",
     '[fixer]\nfix_timeouts = 1\n\n[[tasks]]\nid = "a"\nprompt = "hi"\n', "wrong-type", 2),
    ("toml-nesting-200-deep", ".toml", "a = " + "[" * 200 + "]" * 200 + "\n", "too-deep", None),
    ("toml-not-utf8", ".toml", b'name = "caf\xe9"\n', "not-utf8", 1),
    ("toml-empty", ".toml", "", "empty-plan", 1),
]  # fmt: skip


def write_case(directory: Path, case: Case) -> Path:
    """Put ``case`` on disk under ``directory`` and return the path to hand to the loader."""
    case_id, suffix, content, _rule, _line = case
    if suffix == "/":
        path = directory / case_id
        path.mkdir()
        return path
    path = directory / f"{case_id}{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    return path
