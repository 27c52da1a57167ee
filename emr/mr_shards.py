"""The streaming step as an MRJob whose mapper and reducer are our binaries.

Used for the local run of the step under mrjob's local runner, which splits the input into
several map tasks (setting mapreduce_map_input_start for each), sorts, and runs several
reducers:

    .venv-mrjob/bin/python emr/mr_shards.py -r local --num-cores 2 \
        --bin-dir target/release --mapper-args '--shards 16' \
        --output-dir out/ --no-cat-output --counters-json out.counters.json input.csv

Prefer emr/local-run.sh, which sets this up. The mapper reads plain lines here (the local
runner does not key them by offset); on EMR use the step in emr/step.json.
"""

import json
import os
import shlex

from mrjob.job import MRJob
from mrjob.step import MRStep


class MRShards(MRJob):
    # Two key fields (shard, offset) sort a shard by offset; a shard goes to one reducer by its
    # first field. The local runner ignores the partitioner and groups by the first field itself.
    JOBCONF = {
        "stream.num.map.output.key.fields": "2",
        "mapreduce.partition.keypartitioner.options": "-k1,1",
    }
    PARTITIONER = "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner"

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--bin-dir", required=True,
                              help="directory holding the mapper and reducer binaries")
        self.add_passthru_arg("--mapper-args", default="",
                              help="options for the mapper, as one shell-quoted string")
        self.add_passthru_arg("--counters-json", default=None,
                              help="write the job's summed counters here as JSON")

    def steps(self):
        bin_dir = os.path.abspath(self.options.bin_dir)
        mapper = [os.path.join(bin_dir, "mapper")] + shlex.split(self.options.mapper_args)
        reducer = [os.path.join(bin_dir, "reducer")]
        return [MRStep(mapper_cmd=shlex.join(mapper), reducer_cmd=shlex.join(reducer))]


def main():
    job = MRShards()
    with job.make_runner() as runner:
        runner.run()
        if job.options.counters_json:
            steps = runner.counters()
            with open(job.options.counters_json, "w") as f:
                json.dump(steps[0] if steps else {}, f, indent=1, sort_keys=True)
        if job.options.cat_output:
            for line in runner.cat_output():
                os.write(1, line)


if __name__ == "__main__":
    main()
