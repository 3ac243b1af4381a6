"""The benchmark report's targets table (issue 21) judges medians as the issue states them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench import disk
from tests.bench.report import build, targets

MiB = 1 << 20


def results(medians: dict[str, dict[str, float]], peak_rss: int | None = 100 * MiB) -> dict[str, Any]:
    """Raw results with one value per (metric, contender), as bench.py records them."""
    metrics = [{"name": name, "contenders": {who: {"values": [value], "failure": None} for who, value in by.items()}}
               for name, by in medians.items()]
    return build({"metrics": metrics, "contenders": {"zosfs": {"peak_rss": peak_rss, "version": "0.1.0"},
                                                      "s3fs": {"version": "V1.97 with OpenSSL"}}})


def verdicts(res: dict[str, Any]) -> dict[str, str]:
    return {target: verdict for target, _, verdict in targets(res)}


def find(rows: dict[str, str], start: str) -> str:
    (verdict,) = [v for target, v in rows.items() if target.startswith(start)]
    return verdict


def test_ratios_below_their_floor_are_not_met_and_above_are_met() -> None:
    rows = verdicts(results({
        "ls_first": {"zosfs": 3.0, "s3fs": 5.0},              # 0.60 x s3fs's time: met (<= 0.67)
        "par_read": {"zosfs": 520.0, "boto3": 800.0},         # 0.65 x boto3: not met (>= 0.8)
        "seq_read_256_cold": {"zosfs": 700.0, "boto3": 800.0},  # 0.875: met
        "seq_read_cold": {"zosfs": 636.0, "boto3": 800.0},    # 0.795: not met, also worse than 0.81 before
        "seq_write": {"zosfs": 290.0, "boto3": 300.0},        # 0.967: worse than 0.98 before
        "small_files": {"zosfs": 121.0, "boto3": 152.0},      # 0.796, 0.80 at two decimals: as before
    }, peak_rss=170 * MiB))
    assert find(rows, "ls -l first mount <= 0.67 x s3fs (V1.97)") == "met"
    assert find(rows, "parallel cold read") == "**not met**"
    assert find(rows, "cold read of the 256 MiB") == "met"
    assert find(rows, "cold read of the 1 GiB") == "**not met**"
    assert find(rows, "zosfs peak RSS <= 160 MiB") == "**not met**"
    assert find(rows, "sequential write no worse") == "**not met**"
    assert find(rows, "cold read no worse") == "**not met**"
    assert find(rows, "small files no worse") == "met"


def test_slow_ls_and_small_peak_rss() -> None:
    rows = verdicts(results({"ls_first": {"zosfs": 3.5, "s3fs": 5.0}}, peak_rss=150 * MiB))  # 0.70 x
    assert find(rows, "ls -l first mount") == "**not met**"
    assert find(rows, "zosfs peak RSS") == "met"


def test_targets_without_measurements_are_undecided() -> None:
    rows = verdicts(results({"seq_write": {"zosfs": 300.0}}, peak_rss=None))
    assert set(rows.values()) == {"?"}
    assert len(rows) == 10


def test_the_read_after_a_remount_must_beat_its_own_cold_read_and_the_better_peer() -> None:
    target = "read after a remount (warm on disk) >= 3 x own cold read and >= 1.5 x the better peer"
    met = verdicts(results({"seq_read_remount_cold": {"zosfs": 200.0, "s3fs": 150.0},
                            "seq_read_remount": {"zosfs": 900.0, "s3fs": 500.0, "rclone": 590.0}}))
    assert met[target] == "met"  # 4.5 x its cold read, 1.53 x rclone (the better peer)
    slow_vs_peer = verdicts(results({"seq_read_remount_cold": {"zosfs": 200.0},
                                     "seq_read_remount": {"zosfs": 900.0, "s3fs": 500.0, "rclone": 620.0}}))
    assert slow_vs_peer[target] == "**not met**"  # 1.45 x rclone
    slow_vs_cold = verdicts(results({"seq_read_remount_cold": {"zosfs": 320.0},
                                     "seq_read_remount": {"zosfs": 900.0, "s3fs": 500.0}}))
    assert slow_vs_cold[target] == "**not met**"  # 2.8 x its cold read
    # Without this workload's own cold read, the 1 GiB cold read of seq_read stands in.
    fallback = verdicts(results({"seq_read_cold": {"zosfs": 250.0},
                                 "seq_read_remount": {"zosfs": 800.0, "s3fs": 400.0}}))
    assert fallback[target] == "met"
    no_peer = verdicts(results({"seq_read_remount_cold": {"zosfs": 200.0}, "seq_read_remount": {"zosfs": 900.0}}))
    assert no_peer[target] == "?"


def test_the_remount_target_names_the_disk_s_own_read_speed() -> None:
    """3 x the cold read can exceed what the disk under the cache reads at all:
    the report says how fast that disk is, measured in the same run."""
    res = results({"seq_read_remount_cold": {"zosfs": 600.0}, "seq_read_remount": {"zosfs": 1300.0, "s3fs": 600.0}})
    res["disk_read"] = 1500.0
    (text,) = [text for target, text, _ in targets(res) if target.startswith("read after a remount")]
    assert "the disk itself reads 1,500 MiB/s (2.50 x own cold)" in text


def test_the_cold_read_targets_name_the_disk_s_read_speed_while_it_writes() -> None:
    """A cold read that fills the disk cache shares the disk with the OSD that
    serves it: each cold-read target names that ceiling, measured in the same
    run, as a ratio to boto3; the other targets do not."""
    res = results({"par_read": {"zosfs": 560.0, "boto3": 740.0}, "seq_write": {"zosfs": 250.0, "boto3": 290.0}})
    res["disk_read_writing"] = 592.0
    texts = {target: text for target, text, _ in targets(res)}
    (par,) = [text for target, text in texts.items() if target.startswith("parallel cold read")]
    assert par.endswith("; the disk reads 592 MiB/s while writing as much (0.800 x boto3)"), par
    (write,) = [text for target, text in texts.items() if target.startswith("sequential write")]
    assert "while writing" not in write


def test_the_disk_probe_measures_a_read_alone_and_a_read_beside_a_write(tmp_path: Path) -> None:
    """Both ceilings come out as MiB/s, and the probe leaves no file behind."""
    speeds = disk.probe(tmp_path, 16 * MiB)
    assert set(speeds) == {"read", "read_while_writing"}
    assert all(v > 1 for v in speeds.values()), speeds
    assert list(tmp_path.iterdir()) == []
