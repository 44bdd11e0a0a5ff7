#!/usr/bin/env bash
# Copy the dashboard's front-end libraries from the npm registry into the package, with their
# licences: pinned versions, nothing hand-edited. Rerun after changing a version below; the page
# loads nothing from a CDN, so a machine offline still gets the whole dashboard.
set -euo pipefail
HTM=3.1.1     # htm's "preact/standalone" build: Preact 10 with its hooks, and htm (JSX as tagged
              # templates: no build step)
UPLOT=1.6.32  # uPlot: the charts
PREACT=10.5.13  # htm's standalone build bundles Preact 10 (built against ^10.2): its MIT licence

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/src/modelctl/server/ui/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "htm@$HTM" "uplot@$UPLOT" "preact@$PREACT" >/dev/null
for name in htm uplot preact; do mkdir "$name" && tar xzf "$name"-*.tgz -C "$name"; done

rm -rf "$dest" && mkdir -p "$dest/licenses"
cp htm/package/preact/standalone.module.js "$dest/preact-htm.js"
cp uplot/package/dist/uPlot.esm.js "$dest/uPlot.js"
cp uplot/package/dist/uPlot.min.css "$dest/uPlot.css"
cp htm/package/LICENSE "$dest/licenses/htm-$HTM.txt"
cp uplot/package/LICENSE "$dest/licenses/uplot-$UPLOT.txt"
cp preact/package/LICENSE "$dest/licenses/preact-$PREACT.txt"
cat > "$dest/VERSIONS" <<END
htm $HTM (preact/standalone.module.js, bundling Preact 10): Apache-2.0 (htm), MIT (Preact; licence from preact $PREACT)
uplot $UPLOT (dist/uPlot.esm.js, dist/uPlot.min.css): MIT
copied from the npm registry by scripts/vendor-ui.sh
END
echo "vendored into $dest:"; ls -l "$dest"
