"""The zosfs benchmark (issue 8): zosfs against s3fs-fuse, rclone mount and boto3 alone.

Run it with `bash tests/bench/run [--quick] [--only zosfs,boto3] [--workloads seq_write,ls]`
(as root, after `bash .ci/setup`). It is not part of the test suite: setup.cfg
keeps pytest out of tests/bench.

- contenders.py: the contenders (mount, unmount, daemon pid and peak RSS);
- context.py: sizes, source data, buckets, durability polling and content checks;
- workloads.py: one function per workload run;
- bench.py: the command line and the run loop;
- report.py: results.json, results.md, throughput.png.
"""
