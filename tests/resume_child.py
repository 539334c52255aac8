"""A training run that SIGKILLs itself at a chosen point (a child process of tests/test_resume.py).

    python tests/resume_child.py '{"mode": "sft", "model": ..., "root": ..., "out": ..., "kill": "after:2"}'

``kill``: ``after:N`` dies right after checkpoint N is complete; ``during:N`` dies while checkpoint N
is written (its weights on disk, no optimizer, scheduler, RNG or trainer state yet); absent: no kill.
Every run resumes with ``--resume auto`` semantics. ``make_job`` / ``make_samples`` are the settings
the test's uninterrupted run uses too.
"""

import json
import os
import signal
import sys

MAX_STEPS = 4
SAVE_STEPS = 2


def make_samples(root):
    from videoseg_r1.data.registry import get_reader
    from videoseg_r1.training.samples import SampleConfig, build_dataset

    cfg = SampleConfig(model_input_size=56, context_frame_size=56, num_key_frames=1, num_reference_frames=1,
                       max_samples=4)
    return build_dataset(get_reader("synthetic", root, "train"), "synthetic", cfg)


def make_job(mode, model):
    from transformers import AutoTokenizer

    from videoseg_r1.training.job import TrainJobConfig

    common = dict(max_steps=MAX_STEPS, save_steps=SAVE_STEPS, save_total_limit=5, gradient_checkpointing=False,
                  logging_steps=1)
    if mode == "sft":
        cfg = TrainJobConfig(mode="sft", model=model, prompts_per_step=2)
        cfg.trainer = dict(common, learning_rate=1e-3)
        return cfg
    tok = AutoTokenizer.from_pretrained(model)
    keep = {tok.encode(s, add_special_tokens=False)[0] for s in (".", "a")}
    cfg = TrainJobConfig(model=model, prompts_per_step=2, num_generations=4)
    cfg.trainer = dict(common, learning_rate=5e-2, max_completion_length=8, per_device_train_batch_size=4,
                       generation_kwargs={"suppress_tokens": [i for i in range(len(tok)) if i not in keep]})
    return cfg


def run(mode, model, root, out, resume="auto"):
    from videoseg_r1.training.grpo import run_grpo
    from videoseg_r1.training.sft import run_sft

    train = run_sft if mode == "sft" else run_grpo
    return train(make_job(mode, model), make_samples(root), out, resume=resume)


def _install_kill(kill):
    from transformers import Trainer, TrainerCallback

    where, step = kill.split(":")
    step = int(step)
    if where == "during":
        original = Trainer._save_optimizer_and_scheduler

        def save_then_die(self, output_dir):
            if self.state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, output_dir)

        Trainer._save_optimizer_and_scheduler = save_then_die
        return None

    class DieAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), DieAfterSave()]
        original_init(self, *args, **kwargs)

    Trainer.__init__ = init
    return None


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec.get("kill"):
        _install_kill(spec["kill"])
    run(spec["mode"], spec["model"], spec["root"], spec["out"])
