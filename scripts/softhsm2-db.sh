#!/usr/bin/env bash
# SoftHSMv2 2.6.1 with the SQLite object store (objectstore.backend = db), which Debian's
# package leaves out.
#
# 1. Installs what the build needs when missing (apt-get: build-essential, libssl-dev,
#    libsqlite3-dev, pkg-config, debian-archive-keyring).
# 2. Fetches Debian bookworm's source of softhsm2 2.6.1 with apt-get source (its own source
#    list, nothing of the system's apt configuration changed), checks the upstream tarball's
#    sha256 against the .dsc's Checksums-Sha256, and keeps both in $CACHE/src (reused).
# 3. Builds it like Debian (OpenSSL crypto backend, no GOST, no locked memory) plus
#    --with-objectstore-backend-db (and no p11-kit module file: nothing is installed outside
#    $CACHE), under `flock $BUILD_LOCK`, into $CACHE: the module is
#    $CACHE/lib/softhsm/libsofthsm2.so and the token tool $CACHE/bin/softhsm2-util (it carries
#    its own object store code, so a db token needs this one, not Debian's). An existing build
#    is reused.
# 4. Prints the module path on stdout.
#
# With --check it then proves keygate on a db-backed token: a fresh token made with this
# softhsm2-util, keys made with `keygate keys create`, `keygate serve` over HTTPS, then
# `keygate conformance` and AWS's XKS test client (-a), the decision log checked with
# `keygate audit verify`; exits non-zero when anything failed.
#
#   scripts/softhsm2-db.sh            # builds (or reuses) and prints the module path
#   scripts/softhsm2-db.sh --check    # and runs conformance and the XKS suite on a db token
#
# Environment:
#   CACHE=DIR            build and install dir (default target/softhsm2-db)
#   BUILD_LOCK=FILE      lock for the build and the check (default /work/.build.lock if it
#                        exists; empty: no lock)
#   KEYGATE_BIN=PATH     keygate for --check (default: cargo build --release --locked)
#   XKS_TEST_CLIENT=DIR  AWS's XKS test client (default ../shared/aws-xks-test-client)
#   KEEP=1               keep the --check temp dir; a failed check always keeps it
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/token-suite.sh
. scripts/lib/token-suite.sh

VERSION=2.6.1
TARBALL=softhsm2_$VERSION.orig.tar.gz
CACHE=${CACHE:-target/softhsm2-db}
XKS_TEST_CLIENT=${XKS_TEST_CLIENT:-../shared/aws-xks-test-client}
if [ -z "${BUILD_LOCK+set}" ]; then
  BUILD_LOCK=""
  [ -e /work/.build.lock ] && BUILD_LOCK=/work/.build.lock
fi
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac

token_script softhsm2-db

# --- 1. packages -------------------------------------------------------------------------
pkgs=(build-essential libssl-dev libsqlite3-dev pkg-config debian-archive-keyring)
[ "$check" = 1 ] && pkgs+=(curl jq xxd uuid-runtime)
need_packages "${pkgs[@]}"

mkdir -p "$CACHE"
CACHE=$(realpath "$CACHE")
module="$CACHE/lib/softhsm/libsofthsm2.so"
util="$CACHE/bin/softhsm2-util"

# --- 2. the source -------------------------------------------------------------------------
src="$CACHE/src"
mkdir -p "$src"
if [ ! -f "$src/$TARBALL" ] || ! ls "$src"/softhsm2_"$VERSION"-*.dsc >/dev/null 2>&1; then
  apt="$src/apt"
  mkdir -p "$apt/lists/partial"
  cat >"$apt/deb-src.sources" <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  aptopts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt"
    -o Dir::State::Lists="$apt/lists")
  say "fetching softhsm2 $VERSION source (Debian bookworm deb-src)"
  apt-get "${aptopts[@]}" update >&2
  # The Debian packaging tarball is not served any more (404); the .dsc and the upstream
  # tarball are, and they are all the build needs.
  (cd "$src" && apt-get "${aptopts[@]}" source --download-only "softhsm2=$VERSION-2.1" >&2) || true
fi
dsc=$(ls "$src"/softhsm2_"$VERSION"-*.dsc 2>/dev/null | head -1)
[ -n "$dsc" ] && [ -f "$src/$TARBALL" ] || die "could not fetch $TARBALL and its .dsc"
want=$(awk -v f="$TARBALL" '/^Checksums-Sha256:/ {in_s = 1; next} /^[^ ]/ {in_s = 0}
  in_s && $3 == f {print $1}' "$dsc")
got=$(sha256sum "$src/$TARBALL" | awk '{print $1}')
[ -n "$want" ] && [ "$want" = "$got" ] || die "$TARBALL sha256 $got does not match $dsc ($want)"
say "$TARBALL sha256 $got matches $(basename "$dsc")"

# --- 3. the build --------------------------------------------------------------------------
build_secs=""
if [ -f "$module" ] && [ -x "$util" ]; then
  say "reusing $module"
else
  lock_take
  start=$SECONDS
  build="$CACHE/build"
  rm -rf "$build"
  mkdir -p "$build"
  tar -xzf "$src/$TARBALL" -C "$build" --strip-components=1
  say "building SoftHSMv2 $VERSION with the db object store"
  (
    cd "$build"
    ./configure --prefix="$CACHE" --sysconfdir="$CACHE/etc" --with-crypto-backend=openssl \
      --disable-gost --disable-non-paged-memory --with-objectstore-backend-db \
      --disable-p11-kit >&2
    make -j"$(nproc)" >&2
    make install >&2
  )
  build_secs=$((SECONDS - start))
  lock_release
  [ -f "$module" ] && [ -x "$util" ] || die "the build did not install $module and $util"
  say "built $module in ${build_secs}s"
fi

if [ "$check" = 0 ]; then
  echo "$module"
  exit 0
fi

# --- --check: keygate on a db-backed token ---------------------------------------------------
[ -d "$XKS_TEST_CLIENT" ] || die "AWS's XKS test client not found in $XKS_TEST_CLIENT (set XKS_TEST_CLIENT)"
if [ -z "${KEYGATE_BIN:-}" ]; then
  lock_take
  cargo build --release --locked >&2
  lock_release
  KEYGATE_BIN=target/release/keygate
fi
BIN=$(realpath "$KEYGATE_BIN")

lock_take
run_start=$SECONDS
token_workdir

mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = db\nlog.level = ERROR\nslots.removable = false\n' \
  "$work/tokens" >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
pin=$(rand_hex 16)
"$util" --init-token --free --label keygate-db --so-pin "$(rand_hex 16)" --pin "$pin" >/dev/null
(umask 077 && printf '%s' "$pin" >"$work/pin")
unset pin
# The db store keeps a token in one SQLite file: proof that this is the store in use.
db_files=$(find "$work/tokens" -name sqlite3.db | wc -l)
[ "$db_files" -eq 1 ] || die "no sqlite3.db in the token dir: the db object store is not in use"

token_config "$module" keygate-db db db 'softhsm2_conf = "softhsm2.conf"'
failed=()
token_suite "the db-backed SoftHSMv2 token" db
run_secs=$((SECONDS - run_start))
lock_release

token_summary "SoftHSMv2 $VERSION, objectstore.backend = db" "$module" "configure and make"
