"""Sequential Python baseline: the pipeline's cleaning with the csv module, 16 text shards."""
import csv, io, os, sys

M = (1 << 64) - 1
def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)

def main(inp, out, nshards):
    os.makedirs(out, exist_ok=True)
    with open(inp, "rb") as f:
        first = f.readline()
        header = next(csv.reader([first.decode("utf-8-sig")]))
        label = header.index("employed")
        feats = [i for i, c in enumerate(header) if c not in ("employed", "blackfemale", "targetted")]
        files = [open(os.path.join(out, "part-%05d" % s), "w") for s in range(nshards)]
        for fh in files:
            fh.write(",".join(["offset", "employed"] + [header[i] for i in feats]) + "\n")
        offset = len(first)
        kept = dropped = 0
        for raw in f:
            line_offset, offset = offset, offset + len(raw)
            row = next(csv.reader([raw.decode("utf-8").rstrip("\r\n")]))
            if len(row) != len(header) or any(v in ("NA", "") for v in row):
                dropped += 1; continue
            try:
                vals = [float(row[i]) for i in feats]
            except ValueError:
                dropped += 1; continue
            if row[label] not in ("0", "1"):
                dropped += 1; continue
            kept += 1
            files[splitmix64(line_offset) % nshards].write(
                "%d,%s,%s\n" % (line_offset, row[label], ",".join("%g" % v for v in vals)))
        for fh in files:
            fh.close()
    print("kept", kept, "dropped", dropped)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
