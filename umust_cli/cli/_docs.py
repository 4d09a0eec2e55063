"""Man pages (roff) and shell completions generated from the CLI itself.

``tools/gen_docs.py`` writes them into ``man/`` and ``completions/``; a test
regenerates them in memory and fails when the checked-in copies are stale.
Everything is read from the command tree that Typer builds
(``typer.main.get_command``), so a new option shows up here by itself.
"""

from __future__ import annotations

import enum
import pathlib
from dataclasses import dataclass

import typer.main

from umust_cli import __version__
from umust_cli.cli.main import app

PROG = "umust"
_SKIP_OPTS = {"--install-completion", "--show-completion"}


# ----------------------------------------------------------------- the tree
@dataclass(frozen=True)
class Opt:
    flags: tuple[str, ...]  # e.g. ("-o", "--output")
    metavar: str  # "" for a flag
    help: str


@dataclass(frozen=True)
class Cmd:
    path: tuple[str, ...]  # () for the top level, ("tokenize", "midi") for a leaf
    help: str
    args: tuple[str, ...]  # positional metavars, e.g. ("FILE",) or ("SRC...",)
    opts: tuple[Opt, ...]
    subcommands: tuple["Cmd", ...]

    @property
    def name(self) -> str:
        return " ".join((PROG, *self.path))


def _metavar(param) -> str:
    if getattr(param, "metavar", None):  # set by the option itself, e.g. NAME|PATH
        return param.metavar
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return "[" + "|".join(str(m.value) for m in ann) + "]"
    names = {str: "TEXT", int: "INTEGER", float: "FLOAT", pathlib.Path: "PATH"}
    return names.get(ann, "VALUE")


def _param_doc(param) -> tuple[str | None, Opt | None]:
    """(positional metavar, None) for an argument, (None, Opt) for an option."""
    if param.param_type_name == "argument":
        name = (param.metavar or param.name).upper()
        return (name + ("..." if param.nargs == -1 else "")), None
    if getattr(param, "hidden", False) or set(param.opts) & _SKIP_OPTS:
        return None, None
    flags = tuple(sorted(param.opts + param.secondary_opts, key=lambda f: (f.startswith("--"), f)))
    metavar = "" if getattr(param, "is_flag", False) else _metavar(param)
    return None, Opt(flags, metavar, " ".join((param.help or "").split()))


def command_tree(click_cmd=None, path: tuple[str, ...] = ()) -> Cmd:
    """Read the Typer/click command tree into plain dataclasses."""
    if click_cmd is None:
        click_cmd = typer.main.get_command(app)
    args, opts = [], []
    for param in click_cmd.params:
        arg, opt = _param_doc(param)
        args += [arg] if arg else []
        opts += [opt] if opt else []
    opts.append(Opt(("-h", "--help"), "", "Show the help and exit."))
    subs = getattr(click_cmd, "commands", {}) or {}
    children = tuple(command_tree(subs[n], path + (n,)) for n in sorted(subs))
    help_text = " ".join((click_cmd.help or "").split())
    return Cmd(path, help_text, tuple(args), tuple(opts), children)


def _walk(cmd: Cmd):
    yield cmd
    for sub in cmd.subcommands:
        yield from _walk(sub)


# ---------------------------------------------------------------- man pages
def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln if ln[:1] in ".'" else ln) for ln in text.splitlines())


def _man_options(opts: tuple[Opt, ...]) -> list[str]:
    lines = []
    for o in opts:
        flags = ", ".join(f"\\fB{_roff(f)}\\fR" for f in o.flags)
        lines += [".TP", flags + (f" \\fI{_roff(o.metavar)}\\fR" if o.metavar else ""), _roff(o.help or "")]
    return lines


def _man_usage(cmd: Cmd) -> str:
    tail = " ".join([*cmd.args, "[OPTIONS]"] + (["COMMAND [ARGS]..."] if cmd.subcommands else []))
    return f".B {_roff(cmd.name)}\n{_roff(tail)}"


def man_page(group: Cmd) -> str:
    """One roff page for a command group (or the top level) and its commands."""
    title = group.name.replace(" ", "-")
    lines = [f'.TH "{title.upper()}" 1 "" "umust {__version__}" "umust manual"',
             ".SH NAME", f"{_roff(title)} \\- {_roff(group.help.split('. ')[0].rstrip('.'))}",
             ".SH SYNOPSIS", _man_usage(group), ".SH DESCRIPTION", _roff(group.help),
             ".SH OPTIONS", *_man_options(group.opts)]
    if group.subcommands:
        lines.append(".SH COMMANDS")
    for sub in group.subcommands:
        lines += [f'.SS "{_roff(sub.name)}"', _man_usage(sub), ".PP", _roff(sub.help or ""),
                  *_man_options(sub.opts)]
        if group.path == () and sub.subcommands:
            lines += [".PP", f"See \\fB{_roff(sub.name.replace(' ', '-'))}\\fR(1)."]
    if group.path == ():
        groups = ", ".join(f"\\fB{_roff(s.name.replace(' ', '-'))}\\fR(1)" for s in group.subcommands)
        lines += [".SH SEE ALSO", groups]
    return "\n".join(lines) + "\n"


def man_pages(root: Cmd | None = None) -> dict[str, str]:
    """File name -> roff text: umust.1 plus one page per command group."""
    root = root or command_tree()
    pages = {"umust.1": man_page(root)}
    for sub in root.subcommands:
        pages[f"umust-{sub.path[-1]}.1"] = man_page(sub)
    return pages


# -------------------------------------------------------------- completions
def _words(cmd: Cmd) -> tuple[str, str]:
    subs = " ".join(s.path[-1] for s in cmd.subcommands)
    opts = " ".join(f for o in cmd.opts for f in o.flags)
    return subs, opts


def bash_completion(root: Cmd) -> str:
    subs = "\n".join(f'  ["{c.name}"]="{_words(c)[0]}"' for c in _walk(root))
    opts = "\n".join(f'  ["{c.name}"]="{_words(c)[1]}"' for c in _walk(root))
    return _BASH.format(subs=subs, opts=opts)


def _zsh_quote(text: str) -> str:
    return text.replace("'", "'\\''").replace(":", "\\:").replace("[", "\\[").replace("]", "\\]")


def zsh_completion(root: Cmd) -> str:
    cases = []
    for c in _walk(root):
        subs = " ".join(f"'{s.path[-1]}:{_zsh_quote(s.help.split('. ')[0])}'" for s in c.subcommands)
        opts = " ".join(f"'{f}[{_zsh_quote(o.help.split('. ')[0])}]'" for o in c.opts for f in o.flags)
        cases.append(f'    "{" ".join(c.path)}") subs=({subs}); opts=({opts}) ;;')
    return _ZSH.format(cases="\n".join(cases))


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_completion(root: Cmd) -> str:
    known = " ".join(_fish_quote(" ".join(c.path)) for c in _walk(root) if c.path)
    lines = [_FISH_HEAD, f"set -g __umust_known {known}"]
    for c in _walk(root):
        cond = f"__umust_path_is {_fish_quote(' '.join(c.path))}"
        for s in c.subcommands:
            lines.append(f"complete -c umust -f -n {_fish_quote(cond)} -a {s.path[-1]} "
                         f"-d {_fish_quote(s.help.split('. ')[0])}")
        for o in c.opts:
            flag_args = " ".join((f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}") for f in o.flags)
            req = " -r" if o.metavar else ""
            lines.append(f"complete -c umust -n {_fish_quote(cond)} {flag_args}{req} -d {_fish_quote(o.help)}")
    return "\n".join(lines) + "\n"


def completions(root: Cmd | None = None) -> dict[str, str]:
    """File name -> script text for bash, zsh and fish."""
    root = root or command_tree()
    return {"umust.bash": bash_completion(root), "_umust": zsh_completion(root),
            "umust.fish": fish_completion(root)}


_BASH = """# bash completion for umust (generated by tools/gen_docs.py; do not edit)
declare -gA _umust_subs=(
{subs}
)
declare -gA _umust_opts=(
{opts}
)
_umust() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" cmdpath="umust" w i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    [[ $w == -* ]] && continue
    [[ " ${{_umust_subs[$cmdpath]}} " == *" $w "* ]] && cmdpath="$cmdpath $w"
  done
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "${{_umust_opts[$cmdpath]}}" -- "$cur"))
  elif [[ -n ${{_umust_subs[$cmdpath]}} ]]; then
    COMPREPLY=($(compgen -W "${{_umust_subs[$cmdpath]}}" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}}
complete -o filenames -F _umust umust
"""

_ZSH = """#compdef umust
# zsh completion for umust (generated by tools/gen_docs.py; do not edit)
_umust() {{
  local cmdpath="" w i
  local -a subs opts known
  for ((i = 2; i < CURRENT; i++)); do
    w="${{words[i]}}"
    [[ $w == -* ]] && continue
    _umust_lookup "$cmdpath"
    known=(${{subs%%:*}})
    (( ${{known[(Ie)$w]}} )) && cmdpath="${{cmdpath:+$cmdpath }}$w"
  done
  _umust_lookup "$cmdpath"
  if [[ ${{words[CURRENT]}} == -* ]]; then
    _values 'option' $opts
  elif (( ${{#subs}} )); then
    _describe 'command' subs
  else
    _files
  fi
}}
_umust_lookup() {{
  subs=(); opts=()
  case "$1" in
{cases}
  esac
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _umust "$@"
else
  compdef _umust umust
fi
"""

_FISH_HEAD = """# fish completion for umust (generated by tools/gen_docs.py; do not edit)
function __umust_path_is
    set -l cmdpath ''
    for w in (commandline -opc)[2..-1]
        string match -q -- '-*' $w; and continue
        set -l next (string trim -- "$cmdpath $w")
        contains -- $next $__umust_known; and set cmdpath $next
    end
    test "$cmdpath" = "$argv[1]"
end"""
