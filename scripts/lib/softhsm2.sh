# Sourced by the bench scripts: where Debian (and a source build) put SoftHSMv2's module.

# softhsm2_module: prints the path of libsofthsm2.so, or fails with a message.
softhsm2_module() {
  local m
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    [ -f "$m" ] && { printf '%s\n' "$m"; return 0; }
  done
  echo "no libsofthsm2.so found" >&2
  return 1
}
