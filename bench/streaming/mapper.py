#!/usr/bin/env python3
"""The mapper a user would write (as the seed project did): split each line, skip the header
and rows with NA, print the features as str(list), a tab, and the label."""
import sys

for line in sys.stdin:
    row = line.strip().split(',')
    if row[0] == '"sex"' or 'NA' in row:
        continue
    label = row[5]
    features = row[:5] + row[6:10]
    print(str(features) + '\t' + label)
