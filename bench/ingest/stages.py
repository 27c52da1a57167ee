"""Per-stage CPU profile of a `pipeline run` (issue 27): reads `perf script -F tid,period,ip,sym
--inline` output of a `perf record --call-graph dwarf` run and charges each sample to one stage by
the frames on its stack (inlined frames included), the first rule that matches winning.

    perf record -F 999 --call-graph dwarf,16384 -o perf.data pipeline run ...
    perf script -i perf.data -F tid,period,ip,sym --inline | python3 stages.py [--other]

Prints CPU seconds per stage (samples x period; perf's period is in ns at -F with the cpu-clock
event, or cycles otherwise: then pass --hz to convert) and the share of the total."""
import re
import sys
from collections import Counter

# (stage, markers): a sample goes to the first stage one of whose markers is in one of its frames.
RULES = [
    ("key: writer", ["ShardKeyer", "write_content", "keys::decimal", "decimal (inlined)",
                     "record_key", "keyed_line", "itoa"]),
    ("key: reader", ["placement", "content_hash", "xxh3", "shard_of", "splitmix64", "unit_hash"]),
    ("exchange: spill", ["read_lines", "ShardSink::spill", "spill (inlined)", "spill<"]),
    ("write", ["write_held", "ShardSink::write", "ShardSink::finish", "finish (inlined)",
               "PartWriter", "Checksummed", "LocalFile", "crc32", "create_part", "open_part",
               "fsync", "sync_all", "libc_write"]),
    ("read", ["LineReader<R>::fill", "fill<", "fill (inlined)", "LineReader<R>::block",
              "block<", "block (inlined)", "std::io::Read>::read", "open_at", "libc_read",
              "for_range"]),
    ("clean", ["Cleaner", "Scanner::plain", "plain (inlined)", "remember", "memoized",
               "Memo", "LocalStats", "kept (inlined)", "check_digits", "write_record",
               "write_digits_record", "parse_number", "into_updates"]),
    ("parse", ["Scanner::scan", "scan<", "Template", "key (inlined)", "next_line", "memchr",
               "Fields::split", "split_quoted", "csv_core"]),
    ("exchange", ["Pending", "timely", "ShardSink", "Activations", "MergeQueue", "mpmc",
                  "serialize", "bincode", "Batch", "run_worker::{{closure}}", "emit"]),
]

def main():
    other = "--other" in sys.argv
    totals, residual = Counter(), Counter()
    frames, period = [], 0
    def flush():
        if not frames:
            return
        if not any("run_worker" in f for f in frames):
            stage = "start, exit, other threads"
        else:
            # Only the frames the worker's own code called (leaf first, up to run_worker).
            cut = next(i for i, f in enumerate(frames) if "run_worker" in f)
            frames[:] = frames[:cut + 1]
            stage = next((s for s, marks in RULES if any(m in f for f in frames for m in marks)),
                         "worker, other")
            if stage == "worker, other" and any(
                    "ingest::ingest" in f or "read_chunk" in f for f in frames[:3]):
                # The reader loop's own code and its copy of each record into a shard's buffer.
                stage = "exchange" if "memcpy" in frames[0] or "memmove" in frames[0] else "parse"
            if stage == "worker, other":
                residual[frames[0]] += period
        totals[stage] += period
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line.strip():
            flush(); frames, period = [], 0
            continue
        if not line.startswith("\t"):
            parts = line.split()
            period = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*)", line)
        if m:
            frames.append(m.group(1))
    flush()
    total = sum(totals.values())
    order = ["read", "parse", "clean", "key: reader", "key: writer", "exchange",
             "exchange: spill", "write", "worker, other",
             "start, exit, other threads"]
    for s in order:
        print(f"{s:28s} {totals[s] / 1e9:7.3f} s {100 * totals[s] / total:5.1f}%")
    print(f"{'total':28s} {total / 1e9:7.3f} s")
    if other:
        for f, p in residual.most_common(25):
            print(f"  {p / 1e9:6.3f} {f[:150]}")

if __name__ == "__main__":
    main()
