"""The Python scripts under mrjob's local runner, set up like emr/mr_shards.py (same runner,
same splits), for the benchmark."""
import os
import sys

from mrjob.job import MRJob
from mrjob.step import MRStep

HERE = os.path.dirname(os.path.abspath(__file__))


class MRPython(MRJob):
    def steps(self):
        py = sys.executable
        return [MRStep(mapper_cmd=f"{py} {HERE}/mapper.py", reducer_cmd=f"{py} {HERE}/reducer.py")]


if __name__ == "__main__":
    MRPython.run()
