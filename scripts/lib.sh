# shellcheck shell=bash
# Shared by scripts/test, scripts/demo and .ci/run: find or install what the
# gateway's tests and demo need, or say exactly what to install.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly, via sudo, or explains what to run.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*"; fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages yourself: $*"
  say "installing $* (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_cargo() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust from https://rustup.rs (rustup default stable)"
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing; run: sudo apt-get install redis-server"
}

# The Redis TLS test makes a throwaway CA with the openssl CLI.
ensure_openssl() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  command -v openssl >/dev/null 2>&1 || die "openssl still missing; run: sudo apt-get install openssl"
}

ensure_node() {
  if ! command -v node >/dev/null 2>&1; then apt_install nodejs npm; fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 18 ] || die "Node.js $major is too old for oidc-provider 8; install Node 20"
}

# npm ci for a package directory, skipped when the lockfile is unchanged.
ensure_npm_packages() {
  local dir=$1
  ensure_node
  local stamp="$dir/node_modules/.lock-stamp"
  if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then return; fi
  say "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$stamp"
}

ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  command -v chromium >/dev/null 2>&1 || die "chromium still missing; run: sudo apt-get install chromium"
}

# The forward-auth tests start real front proxies in front of the gateway
# (tests/e2e/front_proxies.rs): nginx (auth_request), Caddy (forward_auth)
# and HAProxy (with Lua, for the shipped forward-auth action).
ensure_front_proxies() {
  local missing=() cmd
  for cmd in nginx caddy haproxy; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  for cmd in nginx caddy haproxy; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing; run: sudo apt-get install nginx caddy haproxy"
  done
}

# The forward-auth benchmark's load generator.
ensure_wrk() {
  command -v wrk >/dev/null 2>&1 || apt_install wrk
  command -v wrk >/dev/null 2>&1 || die "wrk still missing; run: sudo apt-get install wrk"
}

# kubernetes-validate (PyPI) in a virtualenv under the user's cache: checks
# config/kubernetes/ against the Kubernetes OpenAPI schemas it ships (no
# cluster, no network once installed). Sets KUBERNETES_VALIDATE_PY to the
# venv's python (which also has PyYAML, a dependency of the package).
KUBERNETES_VALIDATE_VERSION=1.37.0
ensure_kubernetes_validate() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/oidc-bff/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    # Debian's python3 makes virtualenvs only with python3-venv installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv" || die "cannot make a Python virtualenv; run: sudo apt-get install python3-venv"
    fi
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip, into $venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
      || die "pip install kubernetes-validate failed (needs PyPI)"
  fi
  KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
  KUBERNETES_VALIDATE_PY="$venv/bin/python"
}

# The second OpenID provider of the e2e tests (tests/provider2/): IdentityPython's
# pyop with Flask, from PyPI, into a virtualenv under the user's cache with
# the versions pinned in tests/provider2/requirements.txt. The e2e harness
# finds it at the same path (or at $OIDC_BFF_PROVIDER2_VENV) and refuses to
# run when its stamp does not match the requirements file.
provider2_venv() {
  echo "${OIDC_BFF_PROVIDER2_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oidc-bff/provider2-venv}"
}
ensure_provider2() {
  local venv req=tests/provider2/requirements.txt
  venv=$(provider2_venv)
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/.requirements-stamp"; then return; fi
  command -v python3 >/dev/null 2>&1 || apt_install python3
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv" || die "cannot make a Python virtualenv; run: sudo apt-get install python3-venv"
  fi
  say "installing the second provider (pyop, Flask; pip, into $venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" \
    || die "pip install -r $req failed (needs PyPI)"
  cp "$req" "$venv/.requirements-stamp"
}
