"""kd_wsd: feature and prediction transfer, the student alone at inference, no fold leakage through the teacher."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import arch_model, tiny_entry, tiny_options

import mlic.models.regions
from mlic.errors import ConfigError, MlicError
from mlic.models.kd_wsd import check_teacher, student_archs
from mlic.models.regions import boxes_to_rois
from mlic.tasks.base import FoldRun

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 3
TEACHER, STUDENT = tiny_options("kd_wsd")["teacher"], tiny_options("kd_wsd")["student"]  # a wsddn and a baseline
# students whose backbones are built features_only (a list of maps): the deepest is the one matched to the teacher's
FEATURE_LIST_STUDENTS = [tiny_entry("csra"), tiny_entry("hourglass") | {"feature_indices": [2, 3, 4]}]


def student_and_teacher(student=STUDENT, **options):
    net, task = arch_model("kd_wsd", CLASSES, student=student, teacher=TEACHER, **options)
    teacher, _ = arch_model("wsddn", CLASSES, **{k: v for k, v in TEACHER.items() if k != "arch"})
    task.attach_teacher(teacher)
    task.setup(np.eye(CLASSES, dtype=np.float32))
    return net, task, teacher


def batch(n: int = 2) -> dict[str, torch.Tensor]:
    boxes = torch.tensor([[0, 0, 32, 32, 1.0], [0, 0, 16, 16, 0.5], [8, 8, 20, 12, 0.2]]).repeat(n, 1, 1)
    return {"image": torch.randn(n, 3, 32, 32), "boxes": boxes, "target": torch.eye(CLASSES)[:n]}


@pytest.mark.parametrize("student", [STUDENT, *FEATURE_LIST_STUDENTS], ids=lambda s: s["arch"])
def test_feature_transfer_loss_is_zero_when_the_student_is_the_teacher(student):
    net, task, teacher = student_and_teacher(student)
    net.student.backbone.load_state_dict(teacher.backbone.state_dict())
    with torch.no_grad():  # the adapter as the identity: the student's RoI features are the teacher's
        net.adapter.weight.copy_(torch.eye(net.adapter.out_channels).view_as(net.adapter.weight))
        net.adapter.bias.zero_()
    phases = task.phases(3)
    assert [p.name for p in phases] == ["features", "predictions"]
    assert phases[0].trainable == ("student.backbone.", "adapter.")
    task.begin_phase(phases[0])
    step = task.training_step(net.eval(), batch())
    assert step.loss.item() == pytest.approx(0.0, abs=1e-10) and set(step.parts) == {"features"}
    with torch.no_grad():
        net.adapter.weight.mul_(1.5)
    assert task.training_step(net.eval(), batch()).loss.item() > 1e-6


def test_prediction_transfer_adds_the_scaled_distillation_term():
    net, task, teacher = student_and_teacher(sharpen=2.0, distill_weight=1.0)
    task.begin_phase(task.phases(3)[1])
    data = batch()
    step = task.training_step(net.train(), data)
    assert set(step.parts) == {"labels", "distill"}
    assert step.loss.item() == pytest.approx(sum(v.item() for v in step.parts.values()), rel=1e-5)
    assert net.scale.item() == pytest.approx(0.2)
    step.loss.backward()
    assert net.scale.grad is not None and net.scale.grad.abs() > 0  # s learns
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    soft = teacher.regions(data["image"], data["boxes"], sharpen=2.0).image_scores
    plain = teacher.regions(data["image"], data["boxes"]).image_scores
    assert not torch.allclose(soft, plain)  # sharpening changes the soft targets
    with torch.no_grad():  # the paper's terms (the same batch statistics: the student is still in training mode)
        logits = net.student(data["image"])
        distill = F.binary_cross_entropy_with_logits(0.2 * logits, soft)
        labels = F.binary_cross_entropy_with_logits(logits, data["target"])
    assert step.parts["distill"].item() == pytest.approx(distill.item(), rel=1e-5)
    assert step.parts["labels"].item() == pytest.approx(labels.item(), rel=1e-5)


def test_the_student_pools_its_rois_in_float32_under_bf16_autocast(monkeypatch):
    """As the teacher: bf16 boxes would round (fractions of a pixel here, 1-2 px at 256 px and above)."""
    net, _, _ = student_and_teacher()
    calls = []

    def spy(features, rois, *args, **kwargs):
        calls.append((features.dtype, rois))
        return roi_align(features, rois, *args, **kwargs)

    roi_align = mlic.models.regions.roi_align
    monkeypatch.setattr(mlic.models.regions, "roi_align", spy)
    data = batch()
    boxes = data["boxes"] + torch.tensor([0.3, 0.7, 0.1, 0.9, 0.0])
    assert not torch.equal(boxes.bfloat16().float(), boxes)  # what the bug pooled
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adapted = net.train()(data["image"], boxes)
    assert [(features, rois.dtype) for features, rois in calls] == [(torch.float32, torch.float32)]
    torch.testing.assert_close(calls[0][1], boxes_to_rois(boxes), rtol=0, atol=0)
    assert adapted.shape[:2] == (2, 3) and torch.isfinite(adapted).all()


@pytest.mark.parametrize("arch", ["cnn_rnn", "hog_linear", "wsddn"])
def test_a_student_that_is_not_an_image_classifier_is_refused_naming_the_key_and_the_choices(arch):
    with pytest.raises(ConfigError) as info:
        arch_model("kd_wsd", CLASSES, {"hog": 4}, student={"arch": arch}, teacher=TEACHER)
    message = str(info.value)
    assert "models.<entry>.student.arch" in message and f"arch {arch!r}" in message
    assert "use one of: " + ", ".join(student_archs()) in message
    assert {"baseline", "csra", "hourglass", "ml_decoder", "srn"} <= set(student_archs())
    assert not {"cnn_rnn", "hog_linear", "kd_wsd", "resnet50_hog", "sca", "wsddn"} & set(student_archs())


def test_the_student_predicts_alone_and_without_distillation_reads_no_boxes():
    net, task, _ = student_and_teacher()
    assert task.sources == ("image", "boxes") and task.predict_sources == ("image",)
    images = batch()["image"]
    with torch.no_grad():
        scores = task.predict_step(net.eval(), {"image": images})
        assert torch.allclose(scores, torch.sigmoid(net.student(images)))
    _, plain = arch_model("kd_wsd", CLASSES, student=STUDENT, teacher=TEACHER, distill=False)
    assert plain.sources == ("image",) and [p.name for p in plain.phases(3)] == ["train"]


def test_a_teacher_from_another_fold_or_other_rows_is_refused():
    rows = np.array([0, 2, 3, 5])
    from mlic.tasks.base import rows_digest

    run = FoldRun(cfg=None, model="kd_wsd", fold=1, train_rows=rows, device=torch.device("cpu"))
    check_teacher({"fold": 1, "train_rows_sha256": rows_digest(rows[::-1])}, run, "t")  # order does not matter
    with pytest.raises(MlicError, match="fold 0, not fold 1"):
        check_teacher({"fold": 0, "train_rows_sha256": rows_digest(rows)}, run, "t")
    with pytest.raises(MlicError, match="validation labels"):
        check_teacher({"fold": 1, "train_rows_sha256": rows_digest(np.array([0, 1, 2, 3, 5]))}, run, "t")


def test_the_dvc_train_stage_of_a_fold_depends_on_that_folds_teacher():
    from mlic.config import config_from_dict
    from mlic.pipeline import generate

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["models"] = ["kd_wsd"]
    stages = yaml.safe_load(generate(config_from_dict(params), root))["stages"]
    for fold in params["train"]["folds"]:
        teacher_out = stages[f"teacher-kd_wsd-{fold}"]["outs"][0]
        assert teacher_out == f"data/processed/teachers/kd_wsd/fold_{fold}"
        teachers = [d for d in stages[f"train-kd_wsd-{fold}"]["deps"] if d.startswith("data/processed/teachers")]
        assert teachers == [teacher_out]  # its own fold's teacher, no other


@pytest.mark.slow  # the stages prepare, folds, proposals, teacher (x 2) and train, in process: 2 s and more
def test_teacher_and_student_stages_train_without_fold_leakage(sample_competition, tmp_path, monkeypatch):
    """Stages teacher then train on a tiny sample: the teacher saw only the fold's training rows, and a student
    handed another fold's teacher refuses it."""
    from mlic.cli import main as mlic
    from mlic.layout import load_checkpoint, load_folds, load_prepared
    from mlic.tasks.base import rows_digest

    params = {
        "data": {"root": str(sample_competition)},
        "prepare": {"image_size": 32},
        "hog": {"image_size": 32},
        "proposals": {"max_boxes": 4},
        "folds": {"n_splits": 2},
        "models": {"kd": {"arch": "kd_wsd", "student": STUDENT, "teacher": TEACHER, "feature_epochs": 1}},
        "train": {"models": ["kd"], "folds": [0, 1], "epochs": 2, "batch_size": 16, "tta": "none"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for command in (
        ["prepare"],
        ["folds"],
        ["proposals"],
        ["teacher", "--model", "kd", "--fold", "0"],
        ["teacher", "--model", "kd", "--fold", "1"],
        ["train", "--model", "kd", "--fold", "0"],
    ):
        assert mlic(command) == 0, command
    prep = load_prepared("data/processed/prepare")
    folds = load_folds("data/processed/folds.csv", prep.train_ids)
    teacher = load_checkpoint("data/processed/teachers/kd/fold_0")
    assert teacher["fold"] == 0 and teacher["train_rows_sha256"] == rows_digest(np.flatnonzero(folds != 0))
    student = load_checkpoint("data/processed/train/kd/fold_0")
    assert not any(k.startswith("teacher") for k in student["state_dict"])  # the student's checkpoint is its own
    import shutil

    shutil.rmtree("data/processed/teachers/kd/fold_0")
    shutil.copytree("data/processed/teachers/kd/fold_1", "data/processed/teachers/kd/fold_0")
    assert mlic(["train", "--model", "kd", "--fold", "0"]) == 2  # one clear error, not a traceback
