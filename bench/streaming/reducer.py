#!/usr/bin/env python3
"""The reducer a user would write: echo the sorted lines."""
import sys

for line in sys.stdin:
    print(line.strip())
