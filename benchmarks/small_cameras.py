"""Two looping file cameras (carphone 176x144 30 fps, bikes 640x272 25 fps) at the defaults, serve
for DURATION s: frames in/out per camera from /metrics, RSS of the serve process over time."""
import os, re, subprocess, sys, time, urllib.request, pathlib, tempfile
M = pathlib.Path.home() / ".cache/edgeblur/media"
DUR = float(sys.argv[1]) if len(sys.argv) > 1 else 60
tmp = pathlib.Path(tempfile.mkdtemp())
(tmp / "cams.yaml").write_text(f"""http: {{port: 9199}}
cameras:
  - {{name: carphone, url: {M/'carphone.mp4'}, source: {{loop: true}}, output: {{file: {tmp/'a.mp4'}, preview: false}}}}
  - {{name: bikes, url: {M/'bikes.mp4'}, source: {{loop: true}}, output: {{file: {tmp/'b.mp4'}, preview: false}}}}
""")
p = subprocess.Popen([sys.executable, "-m", "edgeblur", "serve", "-c", str(tmp / "cams.yaml")], stdout=subprocess.DEVNULL, stderr=open(tmp/"log","w"))
def scrape():
    t = urllib.request.urlopen("http://127.0.0.1:9199/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(r'^(edgeblur_source_frames_total|edgeblur_frames_total)\{([^}]*)\} ([0-9.e+]+)', t, re.M):
        out[(m.group(1), m.group(2))] = float(m.group(3))
    return out
def rss():
    return int(open(f"/proc/{p.pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
for _ in range(600):
    try:
        s = scrape()
        if all(v > 0 for k, v in s.items() if k[0] == "edgeblur_frames_total" and 'published' in k[1]) and any('published' in k[1] for k in s):
            break
    except Exception:
        pass
    time.sleep(0.5)
time.sleep(5)
a = scrape(); t0 = time.monotonic(); rs = []
while time.monotonic() - t0 < DUR:
    time.sleep(5); rs.append(round(rss()))
b = scrape(); el = time.monotonic() - t0
for cam in ("carphone", "bikes"):
    src = [b[k] - a[k] for k in b if k[0] == "edgeblur_source_frames_total" and f'camera="{cam}"' in k[1]][0]
    res = {k[1].split('result="')[1].rstrip('"'): b[k] - a.get(k, 0) for k in b if k[0] == "edgeblur_frames_total" and f'camera="{cam}"' in k[1]}
    print(f"{cam}: decoded {src/el:.1f} fps, published {res.get('published',0)/el:.1f} fps, not published {({k: v for k, v in res.items() if v and k != 'published'})}")
print("rss MiB samples:", rs, "max", max(rs))
st = urllib.request.urlopen("http://127.0.0.1:9199/status", timeout=5).read().decode()
print("schedule:", re.findall(r'"schedule": (\{.*?\}\}\})', st)[:1])
p.terminate(); p.wait(20)
