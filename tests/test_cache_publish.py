"""Caches built by two runs at once (a job array on a cold cache, or parallel test workers): the first
complete folder stays in place, and a second builder never swaps it out from under a reader."""

import os
import subprocess
import sys

from nlp_ssl import atomic


def _build(final, text):
    tmp = atomic.staging_dir(final)
    (tmp / "data.txt").write_text(text)
    (tmp / "done.json").write_text("{}")
    return tmp


def test_the_first_complete_cache_stays_and_a_later_builder_drops_its_copy(tmp_path):
    final = tmp_path / "cache" / "corpus-v1"
    first, second = _build(final, "first"), _build(final, "second")  # both built before either publishes
    atomic.publish_cache_dir(first, final, "done.json")
    inode = os.stat(final).st_ino
    with (final / "data.txt").open() as reader:  # a run reading the cache while the other publishes
        atomic.publish_cache_dir(second, final, "done.json")
        assert reader.read() == "first"
    assert os.stat(final).st_ino == inode and (final / "data.txt").read_text() == "first"
    assert sorted(p.name for p in final.parent.iterdir()) == ["corpus-v1"]  # no staging or .old- folder left


def test_a_leftover_without_its_marker_is_replaced(tmp_path):
    final = tmp_path / "corpus-v1"
    final.mkdir()
    (final / "data.txt").write_text("half")  # no done.json: a build that never finished
    atomic.publish_cache_dir(_build(final, "whole"), final, "done.json")
    assert (final / "data.txt").read_text() == "whole" and (final / "done.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus-v1"]


def test_two_processes_building_the_same_cached_corpus_at_once_both_succeed(tmp_path):
    code = ("import sys; from nlp_ssl.data.documents import load_kjv_chapters; "
            "print(len(load_kjv_chapters(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["1189", "1189"]
    folder = tmp_path / "datasets"
    assert [p.name for p in folder.iterdir()] == ["kjv-chapters-v1"]
