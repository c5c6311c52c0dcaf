#!/usr/bin/python3
"""tests/fixtures-gen/gen_onyx.py - expected bytes for tests/unit/test_onyx.c.

Builds each opencode.json as a Python dict exactly as docs/onyx-compat.md describes and writes
json.dumps(cfg); renders AGENTS.md pieces with a Python implementation of the spec (the DESC
walk, provider display names, sequential str.replace). The outputs are committed under
tests/unit/fixtures/onyx/, so the unit tests need no Python. Rerun after changing a case, the
built-in template (jobs/templates/AGENTS.md) or the org-info text:

    /usr/bin/python3 tests/fixtures-gen/gen_onyx.py

Where docs/onyx-compat.md is silent (no provider, no model) the dicts follow snapworker's documented
choice (docs/onyx-compat.md), marked "snapworker choice" below.
"""
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/unit/fixtures/onyx"
SKILLS = OUT / "skills"
NO_DESC = "No description available."

# ---------------------------------------------------------------- opencode.json

OPTS = {
    "openai": {"reasoningEffort": "high"},
    "azure": {"reasoningEffort": "high"},
    "anthropic": {"thinking": {"type": "enabled", "budgetTokens": 16000}},
    "bedrock": {"thinking": {"type": "enabled", "budgetTokens": 16000}},
    "google": {"thinking_budget": 16000, "thinking_level": "high"},
}
BASH_DENY = ["rm", "ssh", "scp", "sftp", "ftp", "telnet", "nc", "netcat", "tac", "nl", "od",
             "xxd", "hexdump", "strings", "base64"]


def permission():
    bash = {cmd: "deny" for cmd in BASH_DENY}
    bash["*"] = "allow"
    no_cfg_edit = {"opencode.json": "deny", "**/opencode.json": "deny", "*": "allow"}
    no_cfg_read = {"*": "allow", "opencode.json": "deny", "**/opencode.json": "deny"}
    return {
        "bash": bash,
        "edit": dict(no_cfg_edit),
        "write": dict(no_cfg_edit),
        "read": dict(no_cfg_read),
        "grep": dict(no_cfg_read),
        "glob": dict(no_cfg_read),
        "list": "allow",
        "lsp": "allow",
        "patch": "allow",
        "skill": "allow",
        "question": "allow",
        "webfetch": "allow",
        "external_directory": {
            "*": "deny",
            "/workspace/files": "allow",
            "/workspace/files/**": "allow",
            "/workspace/demo_data": "allow",
            "/workspace/demo_data/**": "allow",
        },
    }


def opencode(llm, disabled):
    llm = llm or {}
    provider, model = llm.get("provider"), llm.get("model_name")
    api_key, api_base = llm.get("api_key"), llm.get("api_base")
    cfg = {"$schema": "https://opencode.ai/config.json"}
    if provider and model:  # snapworker choice: no "model" without both
        cfg["model"] = f"{provider}/{model}"
    cfg["provider"] = {}
    if provider:  # snapworker choice: no provider entry without a provider
        pcfg = {}
        if api_key:
            pcfg["options"] = {"apiKey": api_key}
        if api_base:
            pcfg["api"] = api_base
        opts = OPTS.get(provider, {})
        if opts and model:  # snapworker choice: "models" needs a model name
            pcfg["models"] = {model: {"options": opts}}
        cfg["provider"][provider] = pcfg
    cfg["permission"] = permission()
    for tool in disabled or []:
        cfg["permission"][tool] = "deny"
    return cfg


def llm(provider, model, key=None, base=None):
    return {"provider": provider, "model_name": model, "api_key": key, "api_base": base}


KEY, BASE = "sk-test-123", "https://llm.example.com/v1"
EXTRA = ["question", "webfetch", "todowrite"]
UNI_MODEL = "gpt-\u00e9-\u4e2d\u6587-\U0001F600-\x01-\"-\\-/-\x7f-\u2028"
# Every ASCII character but NUL, then UTF-8 length and surrogate-pair boundaries.
ALL_ASCII = "".join(chr(i) for i in range(1, 128))
BOUNDARIES = "\u0080\u07ff\u0800\ud7ff\ue000\ufeff\uffff\U00010000\U0010ffff"
UNI_KEY = "sk-\u00e9\u4e2d\u6587\U0001F680\n\t\r\b\f\x1f\"\\/end"
OPENCODE_CASES = [
    ("openai_key_base", llm("openai", "gpt-4o", KEY, BASE), ["question"]),
    ("openai_plain", llm("openai", "gpt-4o"), ["question"]),
    ("azure_key", llm("azure", "gpt-4.1", KEY), None),
    ("azure_base_extra", llm("azure", "o3", None, BASE), EXTRA),
    ("anthropic_key", llm("anthropic", "claude-sonnet-4-5", KEY), ["question"]),
    ("anthropic_base_extra", llm("anthropic", "claude-opus-4", None, BASE), EXTRA),
    ("bedrock_key_base", llm("bedrock", "anthropic.claude-3-7", KEY, BASE), ["question"]),
    ("bedrock_plain", llm("bedrock", "anthropic.claude-3-7"), []),
    ("google_key", llm("google", "gemini-2.5-pro", KEY), ["question"]),
    ("google_base_extra", llm("google", "gemini-2.5-flash", None, BASE), EXTRA),
    ("ollama_base", llm("ollama", "llama3.1:8b", None, "http://127.0.0.1:11434/v1"), ["question"]),
    ("openrouter_plain", llm("openrouter", "meta/llama-4"), ["question"]),
    ("openrouter_key_extra", llm("openrouter", "meta/llama-4", KEY), EXTRA),
    ("unicode_openai", llm("openai", UNI_MODEL, UNI_KEY, "https://h\u00e9st/\u4e2d?q=\"x\""), ["question"]),
    ("unicode_other", llm("ollama", UNI_MODEL, UNI_KEY), ["\u00e9t\u00e9-tool", "question"]),
    ("escapes_all", llm("azure", ALL_ASCII + BOUNDARIES, BOUNDARIES + ALL_ASCII, ALL_ASCII), [ALL_ASCII]),
    ("disabled_bash_dup", llm("openai", "gpt-4o"), ["bash", "question", "question", "zeta", "bash"]),
    ("empty_key_base", llm("anthropic", "claude", "", ""), ["question"]),
    ("no_llm", None, ["question"]),                        # snapworker choice
    ("provider_only", llm("openai", None, KEY, BASE), ["question"]),  # snapworker choice
    ("model_only", llm(None, "gpt-4o", KEY), ["question"]),  # snapworker choice
    ("empty_provider", llm("", "gpt-4o"), None),            # snapworker choice
]

# ---------------------------------------------------------------- AGENTS.md pieces

DISPLAY = {"openai": "OpenAI", "anthropic": "Anthropic", "azure": "Azure OpenAI",
           "google": "Google AI", "bedrock": "AWS Bedrock", "vertex": "Google Vertex AI"}
TITLE_INPUTS = ["ollama", "openrouter", "open-router", "my_prov2x", "OpenAI", "OLLAMA", "a1b",
                "x y", "fireworks.ai", "vertex", "azure", "together_ai", "groq2Go"]
# Must match ORG_INFO_SECTION in jobs/onyx_agents.c.
ORG_INFO = ("## Organization\n"
            "\n"
            "`files/org_info/` describes the organization you work in: its teams, who leads them and\n"
            "who reports to whom, and a profile of the person you are helping. Look there first when a\n"
            "request names people, teams or owners.\n")


def display(provider):
    return DISPLAY.get(provider, provider.title()) if provider else "Unknown"


def description(path):
    """DESC of docs/onyx-compat.md, on Python's own text-mode read (universal newlines)."""
    try:
        content = path.read_text(encoding="utf-8")
    except Exception:
        return NO_DESC
    parts = []
    for line in content.split("\n"):
        s = line.strip()
        if not s:
            if parts:
                break
            continue
        if s.startswith("#"):
            continue
        parts.append(s)
        if len(" ".join(parts)) > 100:
            break
    text = " ".join(parts)
    if len(text) > 120:
        text = text[:117] + "..."
    return text or NO_DESC


def skills_section(skills_dir, only=None):
    lines = []
    for d in sorted(skills_dir.iterdir(), key=lambda p: p.name):
        if only is not None and d.name not in only:
            continue
        if d.is_dir() and (d / "SKILL.md").exists():
            lines.append(f"- **{d.name}**: {description(d / 'SKILL.md')}")
    return "\n".join(lines) if lines else "No skills available."


LONG1 = "Builds long, careful dashboards from spreadsheets and notes, "
LONG2 = "with charts for every metric the user asks about and a summary table "
SKILL_FILES = {
    "alpha-long/SKILL.md": f"# Alpha\n\n{LONG1}\n{LONG2}\nnever reached\n".encode(),
    "beta-headings/SKILL.md": b"# Beta\n\n## Usage\n\n### Details\n#no-space heading\n",
    "charlie-noskill/README.md": b"A folder without a SKILL.md is not a skill.\n",
    "delta-frontmatter/SKILL.md": (b"---\r\nname: delta\r\ndescription: Makes slide decks.\r\n---\r\n"
                                   b"\r\n# Delta\r\n\r\nBody text.\r\n"),
    "echo-unicode/SKILL.md": ("\n\n\u3000# Echo\u00a0\r\u00a0Premi\u00e8re ligne \u2014 \u4e2d\u6587\u8bf4\u660e "
                              "\U0001F600\U0001F600\u2003\rSecond line \u2028 with "
                              + "\u00e9\u00e8\u4e2d" * 30 + "\n\nnot reached\n").encode(),
    "foxtrot-invalid/SKILL.md": b"# Foxtrot\n\nbad \xff byte here\n",
    "golf-exact/SKILL.md": ("G" * 120 + "\nnext\n").encode(),
    "hotel-101/SKILL.md": ("h" * 101 + "\nsecond line is not read\n").encode(),
    ".india-hidden/SKILL.md": b"Hidden folders are listed too.\n",
    "juliet.txt": b"a plain file at the top is not a skill\n",
    "kilo-skilldir/SKILL.md/placeholder": b"SKILL.md is a folder here: unreadable\n",
    "lima-whitespace/SKILL.md": b"\t  Indented text\t\n\x0b\x0cmore\x1c\n",
    "mike-empty/SKILL.md": b"",
    "november-100/SKILL.md": ("n" * 100 + "\nnext line still joins\nthen it stops\n").encode(),
}
THREE = ["alpha-long", "beta-headings", "charlie-noskill"]

AGENTS_CASES = [
    {"name": "full", "llm": llm("openai", "gpt-4o", KEY), "nextjs_port": 3015,
     "use_demo_data": False, "user_name": "Ada Lovelace", "user_role": "Staff Engineer",
     "disabled_tools": ["question", "webfetch"], "include_org_info": True,
     "skills_dir": "tests/unit/fixtures/onyx/skills"},
    {"name": "demo", "llm": llm("ollama", None), "nextjs_port": 0, "use_demo_data": True,
     "user_name": "Grace", "user_role": None, "disabled_tools": [], "include_org_info": False,
     "skills_dir": None},
    {"name": "unicode", "llm": llm("my-llm_2x", "mod\u00e8le-\u4e2d\u6587-\U0001F600"),
     "nextjs_port": 8080, "use_demo_data": False, "user_name": "Zo\u00eb", "user_role": "",
     "disabled_tools": ["bash"], "include_org_info": False, "skills_dir": ""},
    {"name": "no_llm", "llm": None, "nextjs_port": 3010, "use_demo_data": False,
     "user_name": None, "user_role": "ignored", "disabled_tools": None,
     "include_org_info": True, "skills_dir": None},
]


def render_agents(template, c):
    m = c["llm"] or {}
    name, role = c["user_name"], c["user_role"]
    if c["use_demo_data"] or not name:
        user = ""
    elif role:
        user = f"You are assisting **{name}**, {role}, with their work."
    else:
        user = f"You are assisting **{name}** with their work."
    tools = c["disabled_tools"]
    skills = skills_section(ROOT / c["skills_dir"]) if c["skills_dir"] else "No skills available."
    values = [
        ("{{USER_CONTEXT}}", user),
        ("{{LLM_PROVIDER_NAME}}", display(m.get("provider"))),
        ("{{LLM_MODEL_NAME}}", m.get("model_name") or "Unknown"),
        ("{{NEXTJS_PORT}}", str(c["nextjs_port"]) if c["nextjs_port"] else "Unknown"),
        ("{{DISABLED_TOOLS_SECTION}}", f"\n**Disabled Tools**: {', '.join(tools)}\n" if tools else ""),
        ("{{AVAILABLE_SKILLS_SECTION}}", skills),
        ("{{ORG_INFO_SECTION}}", ORG_INFO if c["include_org_info"] else ""),
        ("{{KNOWLEDGE_SOURCES_SECTION}}", ""),  # files_path unknown in these cases
    ]
    out = template
    for key, value in values:
        out = out.replace(key, value)
    return out


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, llm_cfg, disabled in OPENCODE_CASES:
        write(OUT / f"opencode_{name}.json", json.dumps(opencode(llm_cfg, disabled)))
        manifest.append({"name": name, "llm": llm_cfg, "disabled_tools": disabled})
    write(OUT / "opencode_cases.json", json.dumps(manifest, indent=1))

    if SKILLS.exists():
        shutil.rmtree(SKILLS)
    for rel, data in SKILL_FILES.items():
        write(SKILLS / rel, data)
    write(OUT / "skills_all.txt", skills_section(SKILLS))
    write(OUT / "skills_three.txt", skills_section(SKILLS, only=THREE))
    write(OUT / "titles.json", json.dumps({p: display(p) for p in TITLE_INPUTS}, indent=1))

    template = (ROOT / "jobs/templates/AGENTS.md").read_text(encoding="utf-8")
    for c in AGENTS_CASES:
        write(OUT / f"agents_{c['name']}.md", render_agents(template, c))
    write(OUT / "agents_cases.json", json.dumps(AGENTS_CASES, indent=1))
    print(f"wrote {len(OPENCODE_CASES)} opencode cases, {len(AGENTS_CASES)} AGENTS.md cases to {OUT}")


if __name__ == "__main__":
    main()
