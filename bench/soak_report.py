"""What a soak run reports, the same for every host (soak_comfyui.py; an A1111 soak imports this too):
the resident memory (RSS) of the host's process after each generation, and a hash of each image's
pixels, then whether RSS grew less than the target after the first run and whether every run of
the same seed gave the same image.

    log = SoakLog("ComfyUI 0.33.0 @ 783545f6", runs=50)
    log.add(seed, rss_bytes(server_pid), pixel_hash(png_bytes), seconds)   # once per generation
                                                   # (or tensor_hash(latent))
    ok = log.summary()                                                       # prints; False on a FAIL
"""
import hashlib
import io

MIB = 2 ** 20
RSS_TARGET_MIB = 50


def rss_bytes(pid="self"):
    """Resident set size of a process (Linux /proc/<pid>/status, VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def pixel_hash(image_bytes):
    """sha256 (16 hex digits) of an image file's decoded pixels, mode and size: the PNG's text
    chunks (ComfyUI's workflow, A1111's parameters) and its compression do not count."""
    from PIL import Image
    with Image.open(io.BytesIO(image_bytes)) as im:
        im.load()
        head = f"{im.mode} {im.size[0]}x{im.size[1]}\n".encode()
        return hashlib.sha256(head + im.tobytes()).hexdigest()[:16]


def tensor_hash(*tensors):
    """sha256 (16 hex digits) of tensors' shapes, dtypes and values, where a run's result is a tensor
    (a latent) rather than an image file."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class SoakLog:
    def __init__(self, title, runs, what="image"):
        """what: what the hash is of ("image", or "latents" where the run ends at the sampler)."""
        self.title, self.runs, self.what, self.rows = title, runs, what, []
        print(f"soak: {title}, {runs} generations", flush=True)

    def add(self, seed, rss, image_hash, seconds):
        self.rows.append((seed, rss, image_hash))
        first = self.rows[0][1]
        print(f"run {len(self.rows):3d}/{self.runs}  seed {seed}  RSS {rss / MIB:8.1f} MiB "
              f"({(rss - first) / MIB:+7.1f} since run 1)  {self.what} {image_hash}  {seconds:6.1f} s", flush=True)

    def summary(self):
        """Prints the verdicts; True when all pass."""
        rss = [r for _, r, _ in self.rows]
        growth = (rss[-1] - rss[0]) / MIB
        peak = (max(rss[1:], default=rss[0]) - rss[0]) / MIB
        rss_ok = growth < RSS_TARGET_MIB
        print(f"RSS after run 1: {rss[0] / MIB:.1f} MiB, after run {len(rss)}: {rss[-1] / MIB:.1f} MiB; "
              f"growth {growth:+.1f} MiB (largest after run 1: {peak:+.1f} MiB), "
              f"target < {RSS_TARGET_MIB} MiB: {'PASS' if rss_ok else 'FAIL'}")
        by_seed = {}
        for seed, _, h in self.rows:
            by_seed.setdefault(seed, []).append(h)
        same_ok = all(len(set(hs)) == 1 for hs in by_seed.values())
        parts = [f"seed {s}: {len(hs)} runs, {len(set(hs))} distinct" for s, hs in by_seed.items()]
        print(f"same seed, same {self.what}: {'; '.join(parts)}: {'PASS' if same_ok else 'FAIL'}")
        firsts = [hs[0] for hs in by_seed.values()]
        apart_ok = len(set(firsts)) == len(firsts)  # else the check above could pass on a constant image
        if len(firsts) > 1:
            print(f"different seeds, different {self.what}: {'PASS' if apart_ok else 'FAIL'}")
        ok = rss_ok and same_ok and apart_ok
        print(f"soak {'PASS' if ok else 'FAIL'}: {self.title}", flush=True)
        return ok
