"""The load benchmark at a small size, in this process: it runs, measures every save, and leaves the library
as it found it (its timers wrap library functions for the run only). The full sizes are
``python scripts/bench_load.py`` (200,000 examples, 100 saves) and ``python scripts/kill_resume.py --kills 20``;
``test_kill_resume.py`` runs the latter's pieces."""

from __future__ import annotations


import bench_load
import trainer_ext.evaluation as evaluation_module
import trainer_ext.records as records
import trainer_ext.tracker as tracker_module


def test_bench_load_measures_every_save(tmp_path):
    before = (evaluation_module.evaluate_model, records._replace_atomically, tracker_module.RunTracker.select)
    rows = bench_load.run(3000, 4, tmp_path / "run", quiet=True)
    assert [r["save"] for r in rows] == [1, 2, 3, 4]
    assert all(r["rss_mib"] > 0 and r["evaluate_s"] > 0 and r["write_s"] > 0 for r in rows)
    assert set(rows[-1]["writes"]) == {"checkpoint_metrics.json", "checkpoint_scores.npz", "checkpoint_leaderboard.json",
                                       "checkpoint_leaderboard.md", "trainer_state.json"}
    assert rows[-1]["records"] == 4 and rows[-1]["predictions_mib"] > 0
    assert "leaderboard update per save" in bench_load.summarize(rows, 3000)
    after = (evaluation_module.evaluate_model, records._replace_atomically, tracker_module.RunTracker.select)
    assert after == before, "the benchmark's timers were left in the library"
