"""The job queue: SQLite store, state changes, recovery after a crash, input validation (no models)."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easyphoto.config import GenerateConfig, TrainConfig, effective_config
from easyphoto.errors import BadImageError, ConfigError, InvalidUserIdError, UnknownUserError, UserBusyError
from easyphoto.jobs import (
    CANCELLED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobNotFoundError,
    JobService,
    JobStateError,
    JobStore,
    Limits,
    Upload,
    UploadTooLargeError,
    WorkerSupervisor,
    log_tail,
)


def _png(w: int = 64, h: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _submit(store: JobStore, kind: str = "train", user: str | None = "alice") -> str:
    job_id, _ = store.new_job_dir()
    store.submit(job_id, kind, {"user_id": user}, user_id=user)
    return job_id


def test_settings_layers_types_ranges_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig.from_layers({"rank": 8, "max_steps": 10}, {"rank": "16", "validation_seeds": "1, 2"})
    assert cfg.rank == 16 and cfg.max_steps == 10 and cfg.validation_seeds == (1, 2)
    assert TrainConfig.from_layers({"max_steps": None}).max_steps is None
    assert TrainConfig.from_layers({"validation_templates": " "}).validation_templates == ()
    assert GenerateConfig.from_layers({"apply_fusion_before": "false"}).apply_fusion_before is False
    with pytest.raises(ConfigError, match="TrainConfig.rnak: unknown setting"):
        TrainConfig.from_layers({"rnak": 4})
    with pytest.raises(ConfigError, match=r"TrainConfig.rank: .*integer.*got 'many'"):
        TrainConfig.from_layers({"rank": "many"})
    with pytest.raises(ConfigError, match="random_flip: .*boolean"):
        TrainConfig.from_layers({"random_flip": "maybe"})
    # Out-of-range values are refused where they enter, naming the field (they used to fail in the worker).
    for cls, bad in [
        (TrainConfig, {"rank": 0}),
        (TrainConfig, {"grad_accum": 0}),
        (TrainConfig, {"validate_every": 0}),
        (TrainConfig, {"resolution": 100}),
        (GenerateConfig, {"short_side": 0}),
        (GenerateConfig, {"first_denoise": 5}),
        (GenerateConfig, {"canny_low": 250, "canny_high": 100}),
    ]:
        with pytest.raises(ConfigError) as err:
            cls.from_layers(bad)
        assert err.value.fields == [next(iter(bad))] or not err.value.fields, (bad, err.value.fields)
        assert next(iter(bad)) in str(err.value) or "canny_low" in str(err.value)
    monkeypatch.setenv("EASYPHOTO_TRAIN_DEFAULTS", '{"rank": 4, "resolution": 64}')
    assert effective_config("train").rank == 4 and effective_config("train").resolution == 64
    monkeypatch.setenv("EASYPHOTO_TRAIN_DEFAULTS", "{not json")
    with pytest.raises(ConfigError, match="EASYPHOTO_TRAIN_DEFAULTS is not valid JSON"):
        effective_config("train")


def test_job_lifecycle_in_sqlite(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job_id = _submit(store)
    job = store.get(job_id)
    assert job.state == QUEUED and store.queue_position(job) == 0
    assert (tmp_path / "jobs.db").is_file()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    claimed = store.claim_next(worker_pid=111)
    assert claimed is not None and claimed.id == job_id and claimed.state == RUNNING
    assert claimed.worker_pid == 111 and claimed.attempts == 1
    assert store.claim_next(worker_pid=222) is None
    store.add_event(job_id, {"type": "step", "step": 1}, {"step": 1, "fraction": 0.5})
    store.add_event(job_id, {"type": "step", "step": 2}, {"step": 2})
    assert store.get(job_id).progress == {"step": 2, "fraction": 0.5}
    assert [e["type"] for e in store.events(job_id)] == ["queued", "running", "step", "step"]
    assert [e["step"] for e in store.events(job_id, since=store.events(job_id)[2]["seq"])] == [2]

    assert not store.finish(job_id, 999, SUCCEEDED, result={"x": 1}), "only the claiming worker may finish"
    assert store.finish(job_id, 111, SUCCEEDED, result={"x": 1})
    done = store.get(job_id)
    assert done.state == SUCCEEDED and done.result == {"x": 1} and done.finished is not None
    with pytest.raises(JobNotFoundError):
        store.get("../../etc/passwd")
    with pytest.raises(JobNotFoundError):
        store.get("0123456789abcdef")


def test_two_workers_never_claim_the_same_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    ids = {_submit(store, user=f"u{i}") for i in range(20)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(pid: int) -> None:
        mine = JobStore(tmp_path)
        while (job := mine.claim_next(pid)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=work, args=(p,)) for p in (1, 2, 3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(claimed) == sorted(ids)


def test_cancel_queued_and_running(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    queued = _submit(store, "generate")
    assert store.request_cancel(queued).state == CANCELLED
    running = _submit(store)
    store.claim_next(5)
    job = store.request_cancel(running)
    assert job.state == RUNNING and job.cancel_requested and store.cancel_requested(running)
    assert store.claim_next(5) is None, "a cancelled queued job is never claimed"


def test_restart_marks_running_jobs_interrupted_and_training_resumable(tmp_path: Path) -> None:
    from easyphoto.users import work_dir

    store = JobStore(tmp_path)
    with_ckpt = _submit(store, user="alice")
    without = _submit(store, user="bob")
    gen = _submit(store, "generate", user="alice")
    for pid in (10, 11, 12):
        store.claim_next(pid)
    (work_dir("alice", tmp_path)).mkdir(parents=True)
    (work_dir("alice", tmp_path) / "state.json").write_text('{"step": 2}')

    # The server restarts: the supervisor marks every running job interrupted before it starts workers.
    sup = WorkerSupervisor(tmp_path, workers=1, grace_s=5)
    sup.start()
    try:
        states = {j: store.get(j) for j in (with_ckpt, without, gen)}
        assert all(j.state == INTERRUPTED for j in states.values())
        assert states[with_ckpt].resumable and "resume" in states[with_ckpt].error
        assert not states[without].resumable and not states[gen].resumable
        assert len(sup.pids) == 1
    finally:
        sup.stop()
    assert not sup.pids

    waiting = _submit(store, "generate", user="carol")  # queued before the resume …
    resumed = store.resume(with_ckpt)
    assert resumed.state == QUEUED and resumed.params["resume"] is True
    assert store.claim_next(13).id == with_ckpt, "… yet the resumed training, which ran before, goes first"
    assert store.claim_next(14).id == waiting
    with pytest.raises(JobStateError, match="only trainings"):
        store.resume(gen)
    with pytest.raises(JobStateError, match="running"):
        store.resume(with_ckpt)


def test_service_validates_uploads_and_ids(tmp_path: Path) -> None:
    service = JobService(
        tmp_path, Limits.from_settings(max_file_bytes=50_000, max_pixels=10_000, max_photos=3)
    )
    ok = Upload("me.png", _png())
    with pytest.raises(BadImageError, match="notes.txt: not an image"):
        service.submit_train("alice", [ok, Upload("notes.txt", b"hello, not a photo")])
    with pytest.raises(BadImageError, match="empty.jpg: empty file"):
        service.submit_train("alice", [Upload("empty.jpg", b"")])
    with pytest.raises(UploadTooLargeError, match="big.png: file too large"):
        service.submit_train("alice", [Upload("big.png", os.urandom(60_000))])
    with pytest.raises(BadImageError, match="image too large: 200×200"):
        service.submit_train("alice", [Upload("wide.png", _png(200, 200))])
    with pytest.raises(ConfigError, match="too many photos"):
        service.submit_train("alice", [ok] * 4)
    with pytest.raises(BadImageError, match="no files"):
        service.submit_train("alice", [])
    with pytest.raises(InvalidUserIdError):
        service.submit_train("../evil", [ok])
    with pytest.raises(ConfigError, match="TrainConfig.bogus: unknown setting"):
        service.submit_train("alice", [ok], {"bogus": 1})
    with pytest.raises(ConfigError, match="validation_templates names files on the server"):
        service.submit_train("alice", [ok], {"validation_templates": ["/etc/hostname"]})
    with pytest.raises(UnknownUserError, match="nobody"):
        service.submit_generate(["nobody"], [ok])
    assert service.store.list() == [], "nothing is queued after a refused submission"
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [], "refused inputs are not kept"

    job = service.submit_train("alice", [Upload("../../x/My Photo!.png", _png())], {"rank": 4})
    stored = job.params["photos"][0]["file"]
    assert stored == "00_My_Photo.png" and (tmp_path / "jobs" / job.id / "inputs" / stored).is_file()
    assert job.params["train"]["rank"] == 4 and job.params["train"]["resolution"] == 512
    with pytest.raises(UserBusyError):
        service.submit_train("alice", [ok])

    (tmp_path / "jobs" / job.id / "files" / "portrait.png").write_bytes(_png())
    assert service.job_file(job.id, "portrait.png").is_file()
    for bad in ("../jobs.db", "../../jobs.db", "/etc/passwd", ".", "inputs"):
        with pytest.raises(JobNotFoundError):
            service.job_file(job.id, bad)


def test_list_and_delete_users(tmp_path: Path) -> None:
    service = JobService(tmp_path)
    folder = tmp_path / "users" / "carol"
    folder.mkdir(parents=True)
    (folder / "lora.safetensors").write_bytes(b"x")
    (folder / "meta.json").write_text(
        json.dumps({"created": "2026-11-25T10:00:00Z", "best_score": 0.7, "steps": 4})
    )
    (tmp_path / "users" / "half").mkdir()  # no LoRA: not a model
    users = service.list_users()
    assert [u["user_id"] for u in users] == ["carol"] and users[0]["best_score"] == 0.7
    service.delete_user("carol")
    assert not folder.exists() and service.list_users() == []
    with pytest.raises(UnknownUserError):
        service.delete_user("carol")


def test_log_tail(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    assert log_tail(path) == ""
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(path, 3) == "line 97\nline 98\nline 99"


def test_purge_deletes_old_finished_jobs_only(tmp_path: Path) -> None:
    import time

    store = JobStore(tmp_path)
    old_done, running, queued = _submit(store), _submit(store, user="b"), _submit(store, user="c")
    store.claim_next(1)  # old_done runs …
    store.finish(old_done, 1, SUCCEEDED, result={})
    store.claim_next(2)  # running stays running
    orphan = tmp_path / "jobs" / "0123456789abcdef"
    orphan.mkdir()
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    assert store.purge(time.time() - 3600) == []  # finished a moment ago: kept
    assert store.purge(time.time() + 1) == [old_done]
    assert not store.job_dir(old_done).exists() and not orphan.exists()
    with pytest.raises(JobNotFoundError):
        store.get(old_done)
    assert store.get(running).state == RUNNING and store.get(queued).state == QUEUED
    assert store.job_dir(running).exists() and store.job_dir(queued).exists()


def test_concurrent_trainings_of_one_user_queue_once(tmp_path: Path) -> None:
    """Ten simultaneous submissions for one user (any case): one is queued, nine get the holder's id."""
    service = JobService(tmp_path)
    outcomes: list[object] = []

    def submit(i: int) -> None:
        try:
            outcomes.append(service.submit_train("Alice" if i % 2 else "alice", [Upload("me.png", _png())]))
        except UserBusyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queued = [o for o in outcomes if not isinstance(o, UserBusyError)]
    busy = [o for o in outcomes if isinstance(o, UserBusyError)]
    assert len(queued) == 1 and len(busy) == 9
    assert all(e.job_id == queued[0].id and queued[0].id in str(e) for e in busy)
    assert queued[0].user_id == "alice"
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == [queued[0].id]  # no stray folders


def test_generation_progress_goes_template_face_pass_step_and_only_forward() -> None:
    """What the Jobs panel and the Generate tab show while a portrait is made (not just 'Template 1/1')."""
    from easyphoto.jobs.worker import GenerateProgress

    tracker = GenerateProgress(templates=2, min_interval_s=0.0)
    events = [{"type": "template", "index": 0, "total": 2, "name": "a"}]
    for face in (1, 2):
        events.append({"type": "face", "face_index": face - 1, "face": face, "of": 2})
        events += [{"type": "step", "pass": "first", "step": k, "steps": 4} for k in range(1, 5)]
        events += [{"type": "step", "pass": "second", "step": k, "steps": 2} for k in range(1, 3)]
    events += [{"type": "portrait", "index": 0}, {"type": "template", "index": 1, "total": 2, "name": "b"}]
    seen = [p for p in (tracker.update(e) for e in events) if p is not None]
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 0.5
    mid = seen[5]  # face 1, last first-pass step
    assert (mid["template"], mid["face"], mid["faces"], mid["pass"], mid["step"], mid["steps"]) == (
        1,
        1,
        2,
        "first",
        4,
        4,
    )
    assert mid["fraction"] == pytest.approx(0.75 / 2 / 2)
    assert seen[-1]["template"] == 2 and seen[-1]["face"] is None
    # the throttle drops intermediate steps, never the last one of a pass
    slow = GenerateProgress(templates=1, min_interval_s=60.0)
    slow.update({"type": "face", "face": 1, "of": 1})
    kept = [slow.update({"type": "step", "pass": "first", "step": k, "steps": 5}) for k in range(1, 6)]
    assert kept[0] is not None and kept[1:4] == [None, None, None] and kept[4]["step"] == 5


def test_cli_progress_lines_without_a_terminal() -> None:
    import io

    from easyphoto.cli.generate import ProgressPrinter

    out = io.StringIO()
    show = ProgressPrinter(out)
    show({"type": "template", "index": 0, "total": 1, "name": "t.jpg"})
    show({"type": "face", "face": 1, "of": 1})
    for k in (1, 2, 3):
        show({"type": "step", "pass": "first", "step": k, "steps": 3})
    assert out.getvalue().splitlines() == [
        "template 1/1: t.jpg",
        "template 1/1 · face 1/1 · first pass · step 3/3",
    ]
