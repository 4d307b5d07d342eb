"""Self-checks for the notebooks' exercises, one module per lesson (`l01_forward_process`
for notebooks/01_forward_process.ipynb, …), each check next to its solution.

Each `check_*` calls the learner's function on test inputs, compares it with the
package's own implementation, and when it is wrong says *how*, by recognising the usual
mistakes. It returns True or False and prints its verdict; it never raises, so a
notebook with an unfinished exercise still runs to the end. `show_solution(name)` prints
a reference solution, for when you are stuck: where the exercise *is* a package function,
that function itself.
"""

from __future__ import annotations

import inspect
import textwrap

from minidiff.exercises.l01_forward_process import (
    check_alpha_bar,
    check_q_sample,
    solution_alpha_bar,
    solution_q_sample,
)
from minidiff.exercises.l02_reverse_process_2d import (
    check_ddpm_mean,
    check_x0_from_eps,
    solution_ddpm_mean,
    solution_x0_from_eps,
)
from minidiff.exercises.l03_unet import (
    check_resblock_params,
    check_scale_shift,
    check_timestep_embedding,
    solution_resblock_params,
    solution_scale_shift,
    solution_timestep_embedding,
)
from minidiff.exercises.l04_training import check_ema_update, check_warmup_lr, solution_ema_update, solution_warmup_lr
from minidiff.exercises.l05_samplers import check_euler_step, check_nfe, solution_euler_step, solution_nfe
from minidiff.exercises.l06_classifier_free_guidance import (
    check_cfg,
    check_drop_labels,
    solution_cfg,
    solution_drop_labels,
)
from minidiff.exercises.l07_text_conditioning import check_attention_weights, solution_attention_weights
from minidiff.exercises.l08_latent_diffusion import check_kl, solution_kl
from minidiff.exercises.l09_inpainting_and_img2img import check_sdedit_start, solution_sdedit_start
from minidiff.exercises.l10_flow_matching import (
    check_flow_euler_step,
    check_path,
    solution_flow_euler_step,
    solution_path,
)
from minidiff.exercises.l11_transformers import (
    check_dit_block_params,
    check_patchify,
    solution_dit_block_params,
    solution_patchify,
)
from minidiff.exercises.l12_few_steps import (
    check_consistency_coefficients,
    check_unic_step,
    solution_consistency_coefficients,
    solution_unic_step,
)
from minidiff.exercises.l13_adapting_models import (
    check_lora_delta,
    check_mask_iou,
    solution_lora_delta,
    solution_mask_iou,
)
from minidiff.exercises.l14_beyond_images import (
    check_cents,
    check_frame_tokens,
    check_frequency_bin,
    solution_cents,
    solution_frame_tokens,
    solution_frequency_bin,
)
from minidiff.exercises.l15_from_minidiff_to_diffusers import (
    check_img2img_steps,
    check_scale_model_input,
    solution_img2img_steps,
    solution_scale_model_input,
)

_SOLUTIONS = {
    name.removeprefix("solution_"): fn for name, fn in sorted(globals().items()) if name.startswith("solution_")
}


def show_solution(name: str) -> None:
    """Print the reference solution of exercise `name` ("alpha_bar", "q_sample", …), then the
    source of the package code it calls, if it only calls the package."""
    solution = _SOLUTIONS.get(name)
    if solution is None:
        raise ValueError(f"unknown exercise {name!r}; expected one of {', '.join(_SOLUTIONS)}")
    for fn in (solution, *getattr(solution, "uses", ())):
        if not fn.__module__.startswith(__name__):
            print(f"# {fn.__module__}.{fn.__qualname__}")
        print(textwrap.dedent(inspect.getsource(fn)))


__all__ = [
    "check_alpha_bar",
    "check_attention_weights",
    "check_cents",
    "check_cfg",
    "check_consistency_coefficients",
    "check_ddpm_mean",
    "check_dit_block_params",
    "check_drop_labels",
    "check_ema_update",
    "check_euler_step",
    "check_flow_euler_step",
    "check_frame_tokens",
    "check_frequency_bin",
    "check_img2img_steps",
    "check_kl",
    "check_lora_delta",
    "check_mask_iou",
    "check_nfe",
    "check_patchify",
    "check_path",
    "check_q_sample",
    "check_resblock_params",
    "check_scale_model_input",
    "check_scale_shift",
    "check_sdedit_start",
    "check_timestep_embedding",
    "check_unic_step",
    "check_warmup_lr",
    "check_x0_from_eps",
    "show_solution",
    "solution_alpha_bar",
    "solution_attention_weights",
    "solution_cents",
    "solution_cfg",
    "solution_consistency_coefficients",
    "solution_ddpm_mean",
    "solution_dit_block_params",
    "solution_drop_labels",
    "solution_ema_update",
    "solution_euler_step",
    "solution_flow_euler_step",
    "solution_frame_tokens",
    "solution_frequency_bin",
    "solution_img2img_steps",
    "solution_kl",
    "solution_lora_delta",
    "solution_mask_iou",
    "solution_nfe",
    "solution_patchify",
    "solution_path",
    "solution_q_sample",
    "solution_resblock_params",
    "solution_scale_model_input",
    "solution_scale_shift",
    "solution_sdedit_start",
    "solution_timestep_embedding",
    "solution_unic_step",
    "solution_warmup_lr",
    "solution_x0_from_eps",
]
