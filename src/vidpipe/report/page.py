"""The report as one self-contained HTML file: inline CSS and JS, images as `data:` URIs, and a Content Security
Policy that forbids every fetch (no network, no CDN: a page that tried would be blocked and say so in the console,
which the browser tests check). Readable on a phone: one column under 700 px, images scale to the width."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

#: nothing may be fetched: images only from data: URIs, styles and scripts only inline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
:root{--fg:#1b1b1b;--muted:#5c5c5c;--line:#d0d0d0;--bg:#fff;--accent:#0072b2}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg);
 margin:0 auto;padding:12px;max-width:1400px}
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em;border-bottom:1px solid var(--line)}
h3{font-size:1em;margin:.8em 0 .3em}
p.note,.muted{color:var(--muted);font-size:.9em}
table{border-collapse:collapse;font-size:.88em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
svg.plot{width:100%;height:auto;display:block;margin:.4em 0}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:4px 16px}
svg .title{font-size:13px;font-weight:600}svg .tick,svg .legend{font-size:11px;fill:#444}
svg .frame{fill:none;stroke:#999}svg .grid{stroke:#e4e4e4}
svg .marker{stroke:#d55e00;stroke-dasharray:4 3;stroke-width:1.5}
svg polyline{stroke-width:1.6}
.pick{border:1px solid var(--line);border-radius:6px;padding:8px;margin:12px 0}
.row{display:flex;flex-wrap:wrap;gap:8px}
.row figure{margin:0;flex:1 1 240px;min-width:0}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:.8em;color:var(--muted)}
.checker{background-color:#fff;background-image:conic-gradient(#ccc 25%,#fff 0 50%,#ccc 0 75%,#fff 0);
 background-size:16px 16px}
.slider{position:relative;max-width:720px;margin:8px 0;touch-action:pan-y}
.slider img{display:block;width:100%;height:auto}
.slider img.over{position:absolute;left:0;top:0}
.slider .divider{position:absolute;top:0;bottom:0;width:2px;background:#fff;box-shadow:0 0 2px #000;
 pointer-events:none}
.slider input{width:100%;margin:4px 0}
.zoom .crops{display:flex;flex-wrap:wrap;gap:6px}
.crop{position:relative;overflow:hidden;width:220px;height:220px;border:1px solid var(--line);flex:0 0 auto}
.crop img{position:absolute;max-width:none;image-rendering:pixelated}
.crop span{position:absolute;left:2px;top:2px;background:#fffc;font-size:11px;padding:0 3px}
.zoom button{font:inherit;padding:2px 10px;margin-right:4px}
.zoom button[aria-pressed=true]{background:var(--accent);color:#fff}
@media (max-width:700px){body{padding:6px;font-size:14px}.crop{width:46vw;height:46vw}
 .plots{grid-template-columns:1fr}.slider{max-width:none}}
"""

# Sliders clip the reference over the other input; crops show every input around one point of the reference's
# frame (the largest difference at first; a click on a side-by-side image moves it) at 100/200/400 % of the
# reference's pixels. Images used twice are cloned from the one `<img>` that holds their data.
_JS = """
(function(){
function $(q,el){return Array.prototype.slice.call((el||document).querySelectorAll(q));}
$('img[data-from]').forEach(function(img){img.src=document.getElementById(img.dataset.from).src;});
$('.slider').forEach(function(s){
  var range=s.querySelector('input'),over=s.querySelector('img.over'),div=s.querySelector('.divider');
  function set(){var v=Number(range.value);over.style.clipPath='inset(0 '+(100-v)+'% 0 0)';div.style.left=v+'%';
    s.dataset.position=String(v);}
  range.addEventListener('input',set);set();
});
// a crop's offset: centred on the point, kept inside the picture (a point at an edge shows the edge, not space)
function at(c,size,box){return Math.min(0,Math.max(box-size,box/2-c*size));}
$('.pick').forEach(function(p){
  var zoom=p.querySelector('.zoom');if(!zoom)return;
  var w=Number(p.dataset.width),h=Number(p.dataset.height);
  function draw(){
    var z=Number(zoom.dataset.zoom),cx=Number(zoom.dataset.x),cy=Number(zoom.dataset.y);
    $('.crop',zoom).forEach(function(c){
      var img=c.querySelector('img'),box=c.clientWidth||220;
      img.style.width=(w*z)+'px';img.style.height=(h*z)+'px';
      img.style.left=at(cx,w*z,box)+'px';img.style.top=at(cy,h*z,c.clientHeight||box)+'px';
    });
    $('button',zoom).forEach(function(b){b.setAttribute('aria-pressed',String(Number(b.dataset.zoom)===z));});
  }
  $('button',zoom).forEach(function(b){b.addEventListener('click',function(){zoom.dataset.zoom=b.dataset.zoom;draw();});});
  $('.row img',p).forEach(function(img){img.addEventListener('click',function(e){
    var r=img.getBoundingClientRect();zoom.dataset.x=String((e.clientX-r.left)/r.width);
    zoom.dataset.y=String((e.clientY-r.top)/r.height);draw();});});
  draw();
});
})();
"""


def document(title: str, body: Sequence[str]) -> str:
    """The whole page around `body` (HTML fragments)."""
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + f"<script>{_JS}</script></body></html>\n"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, cls: str = "") -> str:
    """A table of escaped cells; numbers right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)

    def cell(v: object) -> str:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f'<td class="num">{escape(_num(v))}</td>'
        return f"<td>{escape('' if v is None else str(v))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
