# Helpers of launch/*.sh, sourced after each script defines `die` and fills its `args` array (rlsel.main's arguments).

# has_flag --name: whether args holds --name or --name=...
has_flag() { local a; for a in "${args[@]}"; do [[ "$a" == "$1" || "$a" == "$1="* ]] && return 0; done; return 1; }

# require_main_args "WORKDIR_HINT": args must name a config and a workdir (checked before any work starts)
require_main_args() {
  ((${#args[@]})) || { usage >&2; die "no arguments for rlsel.main; pass at least --config=... --workdir=..."; }
  has_flag --config || die "pass --config=configs/<name>.py (the arguments after the options go to rlsel.main)"
  has_flag --workdir || die "pass --workdir=$1"
}

quote() {  # one word as the shell would read it back: bare when safe, else single-quoted
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
show() { local sep=""; for a in "$@"; do printf '%s' "$sep"; quote "$a"; sep=" "; done; echo; }
