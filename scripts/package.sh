#!/usr/bin/env bash
# npm run package: builds dist/signalhub-sync_<version>_amd64.deb with dpkg-deb, and
# dist/signalhub-sync-<version>-linux-x64.tar.gz holding the same file tree (for other
# distributions). The application goes to /usr/lib/signalhub-sync with its production
# dependencies installed from the lockfile (npm ci --omit=dev); better-sqlite3's addon is the one
# `npm ci` compiled in this checkout for this Node (same lockfile version, same ABI).
# Needs: node, npm, dpkg-deb, fakeroot-free (dpkg-deb --root-owner-group). Runs lintian when present.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD

VERSION=$(node -p 'require("./package.json").version')
ARCH=amd64
OUT=$ROOT_DIR/packages
WORK=$ROOT_DIR/.tmp/package
STAGE=$WORK/root
APP=$STAGE/usr/lib/signalhub-sync

[ "$(uname -m)" = x86_64 ] || { echo "package: only amd64 is built (this is $(uname -m))" >&2; exit 1; }
ADDON=node_modules/better-sqlite3/build/Release/better_sqlite3.node
[ -f "$ADDON" ] || { echo "package: $ADDON missing: run npm ci first" >&2; exit 1; }
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')

rm -rf "$WORK"
mkdir -p "$APP" "$OUT"

echo "package: building dist/"
npm run --silent build

echo "package: production dependencies from the lockfile"
cp package.json package-lock.json .npmrc "$APP/"
# --ignore-scripts: no compiler run here; the addon compiled by npm ci is copied below.
(cd "$APP" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$APP/node_modules/better-sqlite3/build/Release"
ADDON_COPY=$APP/node_modules/better-sqlite3/build/Release/better_sqlite3.node
install -m 0644 "$ADDON" "$ADDON_COPY"
# The SQLite sources, headers and build files are only needed to compile.
rm -rf "$APP/node_modules/better-sqlite3/deps" "$APP/node_modules/better-sqlite3/src" "$APP/.npmrc"
mv "$APP/package-lock.json" "$APP/npm-shrinkwrap.json"
cp -r dist "$APP/dist"
find "$APP/dist" -name '*.map' -delete
# What the dependencies publish beyond their code: docs, tests, editor and VCS files.
NM=$APP/node_modules
find "$NM" \( -name '.*' ! -name '.' ! -name '.bin' \) -prune -exec rm -rf {} +
find "$NM" -mindepth 2 -maxdepth 3 -type d \( -name test -o -name tests -o -name docs -o -name doc -o -name benchmarks -o -name example -o -name examples -o -name .github \) -prune -exec rm -rf {} +
find "$NM" -type f \( -name '*.md' ! -iname 'license*' -o -name '*.html' -o -name '*.ts' ! -name '*.d.ts' -o -name '*.sh' \) -delete
strip --strip-unneeded "$ADDON_COPY"
# Nothing in the tree is executable but the entry point (lintian: executable-not-elf-or-script).
find "$APP" -type f -exec chmod 0644 {} + -o -type d -exec chmod 0755 {} +
# ... except scripts (a #! line): lintian wants those executable.
find "$APP" -type f -name '*.js' -exec sh -c 'for f; do [ "$(head -c2 "$f")" = "#!" ] && chmod 0755 "$f"; done; true' sh {} +

echo "package: system files"
install -D -m 0755 packaging/signalhub-sync.sh "$STAGE/usr/bin/signalhub-sync"
for unit in systemd/signalhub-sync.service systemd/signalhub-sync-catchup.service systemd/signalhub-sync-catchup.timer; do
  install -D -m 0644 "$unit" "$STAGE/usr/lib/systemd/system/$(basename "$unit")"
done
install -D -m 0644 packaging/sysusers.conf "$STAGE/usr/lib/sysusers.d/signalhub-sync.conf"
install -D -m 0644 packaging/tmpfiles.conf "$STAGE/usr/lib/tmpfiles.d/signalhub-sync.conf"
install -D -m 0644 config/signalhub-sync.example.toml "$STAGE/etc/signalhub-sync/config.toml"
DOC=$STAGE/usr/share/doc/signalhub-sync
install -D -m 0644 README.md "$DOC/README.md"
install -D -m 0644 config/signalhub-sync.example.toml "$DOC/examples/config.toml"
gzip -9n -c CHANGELOG.md > "$DOC/CHANGELOG.md.gz"
# A native package's changelog.gz is in Debian's format; it points to the real one.
CHANGE_DATE=$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'signalhub-sync (%s) unstable; urgency=medium\n\n  * Release %s: see /usr/share/doc/signalhub-sync/CHANGELOG.md.gz\n\n -- signalhub-sync maintainers <signalhub-sync@example.invalid>  %s\n' \
  "$VERSION" "$VERSION" "$CHANGE_DATE" | gzip -9n > "$DOC/changelog.gz"
install -D -m 0644 packaging/signalhub-sync.1 "$STAGE/usr/share/man/man1/signalhub-sync.1"
gzip -9n "$STAGE/usr/share/man/man1/signalhub-sync.1"
chmod 0644 "$DOC"/*.gz "$STAGE/usr/share/man/man1/signalhub-sync.1.gz"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: signalhub-sync"
  echo
  echo "Files: *"
  echo "Copyright: signalhub-sync authors"
  echo "License: EUPL-1.2"
  echo
  echo "Files: usr/lib/signalhub-sync/node_modules/*"
  echo "Copyright: the authors of each npm package (see its package.json and LICENSE)"
  echo "License: various-free"
  echo " The production dependencies listed in /usr/lib/signalhub-sync/npm-shrinkwrap.json, each"
  echo " under the license its own package.json names (MIT, ISC, Apache-2.0, BSD)."
  echo
  echo "License: EUPL-1.2"
  sed -e 's/^$/./' -e 's/^/ /' LICENSE
} > "$DOC/copyright"
install -D -m 0644 packaging/lintian-overrides "$STAGE/usr/share/lintian/overrides/signalhub-sync"

echo "package: control files"
mkdir -p "$STAGE/DEBIAN"
INSTALLED_KB=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: signalhub-sync
Version: $VERSION
Architecture: $ARCH
Maintainer: signalhub-sync maintainers <signalhub-sync@example.invalid>
Depends: nodejs (>= 20.18), libc6, libstdc++6, systemd (>= 247) | systemd-standalone-sysusers
Section: net
Priority: optional
Installed-Size: $INSTALLED_KB
Homepage: https://github.com/signalhub-sync/signalhub-sync
Description: PDND Interoperabilita Signal Hub consumer daemon
 Pulls signals per e-service from PDND Signal Hub, reseeds pseudonyms on
 SEEDUPDATE, matches them against local subjects in SQLite, writes change
 events exactly once into an outbox and delivers them to local sinks
 (webhook, NDJSON file, stdout, a command).
 .
 The better-sqlite3 addon inside is built for Node.js $NODE_MAJOR.
EOF
echo "/etc/signalhub-sync/config.toml" > "$STAGE/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"

DEB=$OUT/signalhub-sync_${VERSION}_${ARCH}.deb
TARBALL=$OUT/signalhub-sync-${VERSION}-linux-x64.tar.gz
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
tar --owner=0 --group=0 --numeric-owner --exclude=./DEBIAN -C "$STAGE" -czf "$TARBALL" .
echo "package: $DEB ($(du -h "$DEB" | cut -f1))"
echo "package: $TARBALL ($(du -h "$TARBALL" | cut -f1))"

if command -v lintian >/dev/null 2>&1; then
  echo "package: lintian"
  lintian --fail-on error,warning "$DEB"
else
  echo "package: lintian not installed (apt-get install lintian): not checked" >&2
fi
