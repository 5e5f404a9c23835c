#!/usr/bin/env bash
# npm run test:systemd: installs the .deb into a Debian container booted with systemd as PID 1
# (systemd-nspawn) and checks the service as an administrator would use it. Needs root and
# Debian's systemd-container and debootstrap. The base rootfs is cached in .cache/systemd/base
# (gitignored; delete it to rebuild); each run works on a fresh copy and removes it.
#
# Node in the container: bookworm's nodejs is 18, too old, so the host's /usr/bin/node is copied
# in and a stand-in "nodejs" package (built here with dpkg-deb, like equivs) satisfies the
# .deb's Depends: nodejs (>= 20.18). The daemon runs against the built-in simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

[ "$(id -u)" = 0 ] || { echo "test:systemd: needs root (systemd-nspawn)" >&2; exit 1; }
for tool in systemd-nspawn debootstrap nsenter dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "test:systemd: $tool missing: apt-get install -y systemd-container debootstrap" >&2; exit 1; }
done

CACHE=$REPO/.cache/systemd
BASE=$CACHE/base
mkdir -p "$CACHE"
VERSION=$(node -p 'require("./package.json").version')
DEB=$REPO/packages/signalhub-sync_${VERSION}_amd64.deb
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ES=11111111-1111-4111-8111-111111111111
PURPOSE=91111111-1111-4111-8111-111111111111
M2M=0c0c0c0c-0000-4000-8000-000000000001
ESCLIENT=0c0c0c0c-0000-4000-8000-000000000002

started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

if [ ! -d "$BASE" ]; then
  step "debootstrap bookworm into $BASE (cached for later runs)"
  rm -rf "$BASE.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libnss-systemd,ca-certificates,procps,iproute2,curl \
    bookworm "$BASE.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  mv "$BASE.tmp" "$BASE"
fi
if [ ! -f "$DEB" ] || [ "${SIGNALHUB_SYNC_REBUILD:-1}" = 1 ]; then
  step "npm run package"
  npm run --silent package
fi

WORK=$(mktemp -d /var/tmp/shs-systemd.XXXXXX)
ROOTFS=$WORK/root
MACHINE=shs-test-$$
CG_V2=/sys/fs/cgroup/unified/$MACHINE
CG_V1=/sys/fs/cgroup/systemd/$MACHINE
NSPAWN_PID=
PID1=

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "${PID1:-}" ]; then
    echo "--- journal of the container (last 60 lines) ---" >&2
    nsenter -t "$PID1" -a -- journalctl --no-pager -n 60 -o short-monotonic >&2 2>/dev/null || true
  fi
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  # nspawn leaves its payload/supervisor cgroups inside ours: remove the tree, deepest first.
  for cg in "$CG_V2" "$CG_V1"; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "fresh rootfs, host node $(node --version), stand-in nodejs package"
cp -a "$BASE" "$ROOTFS"
install -m 0755 "$(command -v node)" "$ROOTFS/usr/bin/node"
echo "$MACHINE" > "$ROOTFS/etc/hostname"
chroot "$ROOTFS" passwd -d root >/dev/null
mkdir -p "$ROOTFS/var/log/journal"
HOST_NODE=$(node -p 'process.versions.node')
mkdir -p "$WORK/nodejs/DEBIAN"
printf 'Package: nodejs\nVersion: %s-host\nArchitecture: amd64\nMaintainer: test <test@example.invalid>\nDescription: stand-in for the host node binary copied to /usr/bin/node\n' "$HOST_NODE" > "$WORK/nodejs/DEBIAN/control"
dpkg-deb --root-owner-group --build "$WORK/nodejs" "$ROOTFS/root/nodejs.deb" >/dev/null
cp "$DEB" "$ROOTFS/root/signalhub-sync.deb"
# A newer version of the same package, for the upgrade check.
dpkg-deb -R "$DEB" "$WORK/next"
sed -i "s/^Version: .*/Version: ${VERSION}+next1/" "$WORK/next/DEBIAN/control"
dpkg-deb --root-owner-group --build "$WORK/next" "$ROOTFS/root/signalhub-sync-next.deb" >/dev/null

# Keys and the simulator's registration of their public halves.
node --input-type=module -e '
import { generateKeyPairSync } from "node:crypto";
import fs from "node:fs";
const [dir, m2m, es, esId, purpose] = process.argv.slice(1);
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
fs.writeFileSync(`${dir}/key.pem`, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
const pub = publicKey.export({ type: "spki", format: "pem" });
fs.writeFileSync(`${dir}/sim-setup.json`, JSON.stringify({
  clients: [
    { clientId: m2m, kind: "m2m", keyId: "kid-m2m", publicKey: pub, organizationId: "org-1" },
    { clientId: es, kind: "eservice", keyId: "kid-es", publicKey: pub, organizationId: "org-1", purposes: [{ id: purpose, eserviceId: esId }] },
  ],
  eservices: [{ id: esId }],
}));
' "$ROOTFS/root" "$M2M" "$ESCLIENT" "$ES" "$PURPOSE"

step "boot the container (systemd-nspawn -b)"
mkdir -p "$CG_V2" "$CG_V1"
(
  echo "$BASHPID" > "$CG_V2/cgroup.procs"
  echo "$BASHPID" > "$CG_V1/cgroup.procs"
  exec systemd-nspawn -q -D "$ROOTFS" -b --register=no --keep-unit --private-network --console=pipe --machine="$MACHINE" >"$WORK/console.log" 2>&1
) &
NSPAWN_PID=$!
PID1=
for _ in $(seq 1 200); do
  for child in $(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null); do
    [ "$(cat /proc/"$child"/comm 2>/dev/null)" = systemd ] && PID1=$child
  done
  [ -n "$PID1" ] && [ -S "/proc/$PID1/root/run/systemd/private" ] && break
  sleep 0.1
done
[ -n "$PID1" ] || fail "the container's systemd did not start (see $WORK/console.log)"
ct() { nsenter -t "$PID1" -a -- "$@"; }
as_service() { ct runuser -u signalhub-sync -- "$@"; }
ct systemctl is-system-running --wait >/dev/null || true
pass "container running, PID 1 is systemd ($(ct systemctl --version | head -1))"

step "install the package as the README says"
ct dpkg -i /root/nodejs.deb >/dev/null
ct dpkg -i /root/signalhub-sync.deb >/dev/null
ct getent passwd signalhub-sync >/dev/null || fail "postinst did not create the signalhub-sync user"
[ "$(ct stat -c '%U %a' /var/lib/signalhub-sync)" = "signalhub-sync 700" ] || fail "state folder owner/mode: $(ct stat -c '%U %a' /var/lib/signalhub-sync)"
[ "$(ct stat -c '%U %a' /etc/signalhub-sync/keys)" = "signalhub-sync 700" ] || fail "keys folder owner/mode"
[ "$(ct systemctl is-enabled signalhub-sync.service 2>/dev/null || true)" = disabled ] || fail "the package enabled the service"
pass "user, folders, nothing enabled"
ct install -o signalhub-sync -g signalhub-sync -m 0600 /root/key.pem /etc/signalhub-sync/keys/m2m.pem
ct install -o signalhub-sync -g signalhub-sync -m 0600 /root/key.pem /etc/signalhub-sync/keys/eservice.pem
write_config() {
  local level=$1
  cat > "$ROOTFS/etc/signalhub-sync/config.toml" <<EOF
preset = "simulator"
simulator_url = "http://127.0.0.1:8787"

[log]
level = "$level"

[pdnd.m2m]
client_id = "$M2M"
key_id = "kid-m2m"
private_key_file = "keys/m2m.pem"

[pdnd.eservice_client]
client_id = "$ESCLIENT"
key_id = "kid-es"
private_key_file = "keys/eservice.pem"

[hub]
poll_interval_seconds = 2

[http]
enabled = true

[[eservices]]
id = "$ES"
name = "residenze"
purpose_id = "$PURPOSE"

[[sinks]]
name = "archive"
type = "file"
path = "/var/lib/signalhub-sync/events.ndjson"
EOF
}
write_config info
# The simulator plays PDND and Signal Hub inside the container (a transient unit, as root).
ct systemd-run --quiet --unit=shs-simulator /usr/bin/signalhub-sync simulator --port 8787 --setup /root/sim-setup.json --seed-signals 50
for _ in $(seq 1 100); do [ "$(ct curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8787/ || true)" != 000 ] && break; sleep 0.1; done
out=$(as_service signalhub-sync config check) || fail "config check as signalhub-sync: $out"
pass "config check as the service user: exit 0"

step "the CLI on the host before the first start"
printf 'key,ref\nRSSMRA80A01H501U,mario\n' > "$ROOTFS/root/subjects.csv"
ct chmod 0600 /root/subjects.csv
ct signalhub-sync subjects import /root/subjects.csv >/dev/null || fail "root: subjects import"
[ "$(ct stat -c %U /var/lib/signalhub-sync/signalhub-sync.db)" = signalhub-sync ] || fail "a root import left a database the service cannot own"
[ "$(as_service signalhub-sync subjects count --json)" = "$(printf '{"total":1,"eservices":[{"id":"%s","name":"residenze","subjects":1}],"tenants":[{"tenant":null,"subjects":1}]}' "$ES")" ] || fail "subjects count as signalhub-sync"
pass "root import, files owned by signalhub-sync; count as signalhub-sync"

step "start: Type=notify reaches active"
ct systemctl start signalhub-sync.service
[ "$(ct systemctl is-active signalhub-sync.service)" = active ] || fail "not active after start"
[ "$(ct systemctl show -P Type signalhub-sync.service)" = notify ] || fail "not Type=notify"
# Ready for systemd means started; /readyz turns 200 after the first successful pull.
for _ in $(seq 1 100); do
  code=$(ct curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/readyz || true)
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || fail "/readyz answered $code"
pass "active, /readyz 200"
for _ in $(seq 1 100); do grep -q '"lastPull": {' <<<"$(as_service signalhub-sync status --json 2>/dev/null)" && break; sleep 0.2; done
grep -q '"lastPull": {' <<<"$(as_service signalhub-sync status --json)" || fail "no successful pull: keys not loaded?"
for _ in $(seq 1 50); do
  pulls=$(ct curl -s http://127.0.0.1:9464/metrics | grep '^signalhub_pulls_total' || true)
  grep -q "eservice=\"$ES\".*status=\"20[06]\"" <<<"$pulls" && break
  sleep 0.2
done
grep -q "eservice=\"$ES\".*status=\"20[06]\"" <<<"$pulls" || fail "no successful pull in the metrics: $pulls"
pass "keys loaded from /etc/signalhub-sync/keys: vouchers obtained, pulls succeed"
status_out=$(ct signalhub-sync status) || fail "status as root while the daemon runs: $status_out"
as_service signalhub-sync events list >/dev/null || fail "events list as signalhub-sync"
pass "status (root) and events list (signalhub-sync) while the daemon runs"
printf 'key,ref\nBNCLGU80A01H501A,luigi\n' > "$ROOTFS/root/more.csv"
ct chmod 0600 /root/more.csv
out=$(ct signalhub-sync subjects import --queue /root/more.csv 2>&1) || fail "root: subjects import --queue while the daemon runs: $out"
[ "$(as_service signalhub-sync subjects count --json | sed 's/.*"total":\([0-9]*\).*/\1/')" = 2 ] || fail "the queued import was not applied"
pass "root: subjects import --queue applied by the daemon"

step "reload re-reads the config"
pid=$(ct systemctl show -P MainPID signalhub-sync.service)
since=$(ct date '+%Y-%m-%d %H:%M:%S')
write_config debug
ct systemctl reload signalhub-sync.service
for _ in $(seq 1 50); do grep -q '"msg":"configuration reloaded"' <<<"$(ct journalctl -u signalhub-sync --since "$since" -o cat)" && break; sleep 0.1; done
grep -q '"msg":"configuration reloaded"' <<<"$(ct journalctl -u signalhub-sync --since "$since" -o cat)" || fail "no 'configuration reloaded' after systemctl reload"
for _ in $(seq 1 50); do grep -q '"level":"debug"' <<<"$(ct journalctl -u signalhub-sync --since "$since" -o cat)" && break; sleep 0.1; done
grep -q '"level":"debug"' <<<"$(ct journalctl -u signalhub-sync --since "$since" -o cat)" || fail "the reloaded log level (debug) did not apply"
[ "$(ct systemctl show -P MainPID signalhub-sync.service)" = "$pid" ] || fail "reload changed the main PID"
pass "reloaded in place (PID $pid), new log level applied"

step "an error the daemon logs is found by journalctl -p err"
since=$(ct date '+%Y-%m-%d %H:%M:%S')
echo 'this is = not [valid toml' >> "$ROOTFS/etc/signalhub-sync/config.toml"
ct systemctl reload signalhub-sync.service
for _ in $(seq 1 50); do grep -q 'reload' <<<"$(ct journalctl -u signalhub-sync --since "$since" -p err -o cat)" && break; sleep 0.1; done
grep -q 'configuration reload rejected\|reload failed' <<<"$(ct journalctl -u signalhub-sync --since "$since" -p err -o cat)" || fail "journalctl -p err does not show the rejected reload"
grep -q '"level":"error"' <<<"$(ct journalctl -u signalhub-sync --since "$since" -p warning..warning -o cat)" && fail "an error record stored at priority warning"
grep -q '"level":"debug"' <<<"$(ct journalctl -u signalhub-sync -p info..info -o cat)" && fail "a debug record stored at priority info"
[ "$(ct systemctl is-active signalhub-sync.service)" = active ] || fail "a bad reload stopped the service"
write_config info
ct systemctl reload signalhub-sync.service
pass "journalctl -p err: $(ct journalctl -u signalhub-sync --since "$since" -p err -o cat | head -1 | cut -c1-110)…"

step "watchdog: a hung main loop is killed and restarted"
ct mkdir -p /run/systemd/system/signalhub-sync.service.d
# /run is the container's own tmpfs: written from inside.
ct sh -c "printf '[Service]\n# test only: a short watchdog so the check takes seconds\nWatchdogSec=4\n' > /run/systemd/system/signalhub-sync.service.d/watchdog.conf"
ct systemctl daemon-reload
ct systemctl restart signalhub-sync.service
pid=$(ct systemctl show -P MainPID signalhub-sync.service)
restarts=$(ct systemctl show -P NRestarts signalhub-sync.service)
ct kill -STOP "$pid"
for _ in $(seq 1 300); do
  now=$(ct systemctl show -P MainPID signalhub-sync.service)
  [ "$now" != "$pid" ] && [ "$now" != 0 ] && [ "$(ct systemctl is-active signalhub-sync.service)" = active ] && break
  sleep 0.1
done
[ "$now" != "$pid" ] && [ "$now" != 0 ] || fail "SIGSTOPped daemon was not replaced"
grep -qi 'watchdog timeout' <<<"$(ct journalctl -u signalhub-sync -o cat)" || fail "no watchdog timeout in the journal"
[ "$(ct systemctl show -P NRestarts signalhub-sync.service)" -gt "$restarts" ] || fail "NRestarts did not grow"
pass "watchdog killed PID $pid, restarted as PID $now"
ct rm -f /run/systemd/system/signalhub-sync.service.d/watchdog.conf
ct systemctl daemon-reload

step "catch-up timer's service while the daemon holds the database"
ct systemctl start signalhub-sync-catchup.service || fail "catch-up service failed while the daemon runs"
catchup_log=$(ct journalctl -u signalhub-sync-catchup -o cat | tail -4)
# systemd reports a SuccessExitStatus= code as 0 in ExecMainStatus: the refusal is in the journal.
grep -q 'DB_LOCKED: database /var/lib/signalhub-sync/signalhub-sync.db is in use by another signalhub-sync process' <<<"$catchup_log" || fail "catch-up did not refuse as the README says (exit 75, database in use): $catchup_log"
[ "$(ct systemctl show -P Result signalhub-sync-catchup.service)" = success ] || fail "catch-up result not success"
pass "catch-up: exit 75 (database in use), Result=success, as the README says"

step "stop ends within TimeoutStopSec"
t0=$(date +%s%N)
ct systemctl stop signalhub-sync.service
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$(ct systemctl show -P Result signalhub-sync.service)" = success ] || fail "stop result $(ct systemctl show -P Result signalhub-sync.service)"
[ "$ms" -lt 30000 ] || fail "stop took $ms ms"
pass "stopped in $ms ms, Result=success"

step "catch-up with the daemon stopped: a real sync pass"
ct systemctl start signalhub-sync-catchup.service || fail "catch-up failed"
[ "$(ct systemctl show -P ExecMainStatus signalhub-sync-catchup.service)" = 0 ] || fail "catch-up exit not 0"
ct systemctl start signalhub-sync-catchup.timer
grep -q signalhub-sync-catchup.timer <<<"$(ct systemctl list-timers --all --no-pager)" || fail "timer not scheduled"
ct systemctl stop signalhub-sync-catchup.timer
pass "catch-up exit 0; the timer schedules it"

step "hardening: no denial in the journal"
if ct journalctl -b -o cat --no-pager | grep -E 'signalhub|node' | grep -iE 'denied|EPERM|EACCES|operation not permitted|seccomp|audit: type='; then
  fail "a denial in the journal"
fi
exposure=$(ct systemd-analyze security --no-pager signalhub-sync.service 2>/dev/null | sed -n 's/.*Overall exposure level for signalhub-sync.service: \([0-9.]*\).*/\1/p')
pass "no denial; systemd-analyze security exposure ${exposure:-n/a}"

step "upgrade keeps the database and restarts a running daemon; a newer schema is refused"
ct systemctl start signalhub-sync.service
pid=$(ct systemctl show -P MainPID signalhub-sync.service)
ct dpkg -i --force-confold /root/signalhub-sync-next.deb >/dev/null
[ "$(ct dpkg-query -W -f '${Version}' signalhub-sync)" = "${VERSION}+next1" ] || fail "upgrade not installed"
[ "$(ct systemctl is-active signalhub-sync.service)" = active ] || fail "not active after the upgrade"
[ "$(ct systemctl show -P MainPID signalhub-sync.service)" != "$pid" ] || fail "the upgrade did not restart the daemon"
[ "$(as_service signalhub-sync subjects count --json | sed 's/.*"total":\([0-9]*\).*/\1/')" = 2 ] || fail "subjects lost in the upgrade"
grep -q 'info' "$ROOTFS/etc/signalhub-sync/config.toml" && grep -q "$ES" "$ROOTFS/etc/signalhub-sync/config.toml" || fail "the upgrade replaced the edited config"
pass "upgraded to ${VERSION}+next1: restarted, database and config kept"
ct systemctl stop signalhub-sync.service
as_service node -e '
const Database = require("/usr/lib/signalhub-sync/node_modules/better-sqlite3");
const db = new Database("/var/lib/signalhub-sync/signalhub-sync.db");
db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, ?, ?)").run("from a newer signalhub-sync", Date.now());
db.close();'
set +e
msg=$(as_service signalhub-sync sync --once 2>&1); rc=$?
set -e
[ "$rc" != 0 ] || fail "a database with a newer schema was opened"
grep -q 'schema version 9999 is newer than this signalhub-sync knows' <<<"$msg" || fail "unclear refusal: $msg"
pass "newer schema refused (exit $rc): $(echo "$msg" | head -1 | cut -c1-120)"

step "remove: the service stops, the database stays"
ct dpkg -r signalhub-sync >/dev/null
ct test -f /var/lib/signalhub-sync/signalhub-sync.db || fail "removing the package deleted the database"
pass "removed; /var/lib/signalhub-sync/signalhub-sync.db kept"

step "all systemd checks passed in $(( $(date +%s) - started )) s"
