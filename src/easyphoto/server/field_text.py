"""Readable names of the settings in the web UI, in English and Simplified Chinese.

A settings field is shown as ``label`` with its help under it: the English help is the schema's own
description (:mod:`easyphoto.config`), so it never drifts from the code; the Chinese help is written
here. :func:`field_texts` returns the ``field.<name>`` / ``help.<name>`` keys the UI hands to
``gr.I18n``. A field missing here falls back to its name made readable (``grad_accum`` → "Grad accum")
and its English description — tests/test_webui.py keeps the table complete.
"""

from __future__ import annotations

#: ``name: (English label, Chinese label, Chinese help)``.
FIELDS: dict[str, tuple[str, str, str]] = {
    # training
    "resolution": (
        "Resolution",
        "分辨率",
        "训练分辨率（像素，8 的倍数）；留空：SD1.5 为 512，SDXL 为 1024。",
    ),
    "max_steps": ("Training steps", "训练步数", "优化步数；留空则按照片数计算。"),
    "steps_per_photo": ("Steps per photo", "每张照片步数", "未指定步数时，每张保留照片的步数。"),
    "max_steps_cap": ("Most steps", "最多步数", "未指定步数时的步数上限。"),
    "batch_size": ("Batch size", "批大小", "每个微批次的图片数。"),
    "grad_accum": ("Gradient accumulation", "梯度累积", "每个优化步的微批次数。"),
    "learning_rate": ("Learning rate", "学习率", "UNet LoRA 的 AdamW 学习率。"),
    "text_encoder_lr_ratio": (
        "Text-encoder lr ratio",
        "文本编码器学习率比例",
        "文本编码器学习率占上面学习率的比例。",
    ),
    "weight_decay": ("Weight decay", "权重衰减", "AdamW 权重衰减。"),
    "grad_clip": ("Gradient clip", "梯度裁剪", "梯度范数裁剪阈值。"),
    "rank": ("LoRA rank", "LoRA 秩", "LoRA 的秩。"),
    "alpha": ("LoRA alpha", "LoRA alpha", "LoRA alpha（缩放 = alpha / 秩）。"),
    "train_text_encoder": ("Train the text encoder too", "同时训练文本编码器", "也在文本编码器上训练 LoRA。"),
    "random_flip": ("Random mirroring", "随机镜像", "随机水平翻转训练图片。"),
    "mixed_precision": ("Mixed precision", "混合精度", "留空：CUDA 上为 fp16，其他设备不用。"),
    "gradient_checkpointing": ("Gradient checkpointing", "梯度检查点", "重算激活以节省显存（CUDA）。"),
    "use_8bit_adam": ("8-bit Adam", "8 位 Adam", "8 位 AdamW（CUDA，需 bitsandbytes）。"),
    "seed": ("Seed", "随机种子", "随机种子；留空或负数为随机。"),
    "validate_every": ("Validate every N steps", "每 N 步验证", "每 N 步验证并保存检查点。"),
    "validation_seeds": ("Validation seeds", "验证种子", "每个种子渲染一张验证图。"),
    "validation_size": (
        "Validation size",
        "验证图尺寸",
        "验证图尺寸（像素，8 的倍数）；留空：SD1.5 为 512，SDXL 为 1024。",
    ),
    "validation_steps": ("Validation steps", "验证步数", "每张验证图的推理步数。"),
    "validation_guidance": ("Validation guidance", "验证引导系数", "验证图的 CFG 引导系数。"),
    "validation_prompt": ("Validation prompt", "验证提示词", "验证图的提示词。"),
    "validation_negative_prompt": ("Validation negative prompt", "验证反向提示词", "验证图的反向提示词。"),
    "validation_templates": ("Validation templates", "验证模板", "每次验证时绘制的模板照片（服务器路径）。"),
    "validation_template_steps": ("Template validation steps", "模板验证步数", "模板验证的步数。"),
    "fuse_top_k": ("Checkpoints fused", "融合检查点数", "融合进最终 LoRA 的最佳检查点数。"),
    "fuse_rank": ("Fused rank", "融合后的秩", "融合后 LoRA 的秩；留空与训练的秩相同。"),
    "keep_checkpoints": ("Keep checkpoints", "保留检查点", "训练成功后保留各检查点。"),
    # generation
    "lora_weight": ("User LoRA weight", "用户 LoRA 权重", "用户 LoRA 的权重。"),
    "crop_ratio": ("Face crop size", "人脸裁剪大小", "人脸裁剪区域大小（人脸尺寸的倍数）。"),
    "short_side": ("Crop short side", "裁剪短边", "每个人脸裁剪区域的短边（像素，8 的倍数）。"),
    "sdxl_short_side": (
        "SDXL crop short side",
        "SDXL 裁剪短边",
        "SDXL 用户每个人脸裁剪区域的短边（像素，8 的倍数；SDXL 以 1024 训练）。",
    ),
    "apply_fusion_before": ("Fuse before the first pass", "第一遍前融合人脸", "第一遍生成前先融合用户的脸。"),
    "before_fusion_ratio": ("Fusion before", "生成前融合比例", "扩散前的人脸融合比例。"),
    "apply_fusion_after": (
        "Fuse before the second pass",
        "第二遍前融合人脸",
        "第二遍生成前再次融合用户的脸。",
    ),
    "after_fusion_ratio": ("Fusion after", "生成后融合比例", "第一遍之后的人脸融合比例。"),
    "first_controlnets": ("First-pass ControlNets", "第一遍 ControlNet", "第一遍使用的 ControlNet。"),
    "canny_low": ("Canny low threshold", "Canny 低阈值", "Canny 边缘低阈值。"),
    "canny_high": ("Canny high threshold", "Canny 高阈值", "Canny 边缘高阈值。"),
    "canny_weight": ("Canny weight", "Canny 权重", "第一遍 canny ControlNet 权重。"),
    "openpose_weight": ("OpenPose weight", "OpenPose 权重", "第一遍 openpose ControlNet 权重。"),
    "color_weight": ("Colour weight", "颜色权重", "第一遍颜色 ControlNet 权重。"),
    "color_cell": ("Colour cell", "颜色马赛克格", "颜色马赛克的格子大小（像素）。"),
    "first_steps": ("First-pass steps", "第一遍步数", "第一遍扩散的步数。"),
    "first_denoise": ("First-pass denoise", "第一遍重绘幅度", "第一遍扩散的去噪强度。"),
    "guidance_scale": ("Guidance", "引导系数", "无分类器引导系数（CFG）。"),
    "mask_grow": ("Mask growth", "蒙版扩张", "第一遍蒙版扩张（人脸宽度的倍数）。"),
    "second_controlnets": ("Second-pass ControlNets", "第二遍 ControlNet", "第二遍使用的 ControlNet。"),
    "second_steps": ("Second-pass steps", "第二遍步数", "第二遍扩散的步数（0：跳过）。"),
    "second_denoise": ("Second-pass denoise", "第二遍重绘幅度", "第二遍扩散的去噪强度。"),
    "second_scale": ("Second-pass scale", "第二遍放大倍数", "第二遍扩散的分辨率倍数。"),
    "second_canny_weight": (
        "Second-pass canny weight",
        "第二遍 Canny 权重",
        "第二遍 canny ControlNet 权重。",
    ),
    "tile_weight": ("Tile weight", "Tile 权重", "第二遍 tile ControlNet 权重。"),
    "ring_width": ("Refine ring width", "精修环宽度", "第二遍边缘环宽度（人脸宽度的倍数）。"),
    "color_shift_middle": ("Colour match after pass 1", "第一遍后颜色匹配", "第一遍后对人脸做颜色匹配。"),
    "color_shift_last": ("Colour match after pass 2", "第二遍后颜色匹配", "第二遍后对人脸做颜色匹配。"),
    "paste_grow": ("Paste-back growth", "贴回蒙版扩张", "贴回蒙版扩张（人脸宽度的倍数）。"),
    "paste_feather": ("Paste-back feather", "贴回羽化", "贴回羽化宽度（人脸尺寸的倍数）。"),
    "prompt": ("Prompt", "提示词", "两遍生成共用的提示词。"),
    "negative_prompt": ("Negative prompt", "反向提示词", "反向提示词。"),
    "single_user_face": (
        "One user, several faces",
        "一个用户、多张脸",
        "只有一个用户 ID 而模板有多张脸时：重绘最大的或最左边的。",
    ),
    "fast": ("Fast mode (LCM)", "快速模式（LCM）", "LCM 采样器 + LCM-LoRA：快数倍。"),
    "fast_first_steps": ("Fast first-pass steps", "快速模式第一遍步数", "快速模式下第一遍的步数。"),
    "fast_second_steps": ("Fast second-pass steps", "快速模式第二遍步数", "快速模式下第二遍的步数。"),
    "fast_guidance_scale": ("Fast guidance", "快速模式引导系数", "快速模式下的引导系数。"),
    "ip_adapter_scale": (
        "IP-Adapter face weight",
        "IP-Adapter 人脸权重",
        "IP-Adapter 人脸权重；留空：有 LoRA 时为 0，无 LoRA 时为 0.7。",
    ),
    "max_short_side": (
        "Largest face crop",
        "最大人脸裁剪",
        "人脸裁剪短边的上限（像素）：不超过它的裁剪保留模板原有像素；"
        "留空：CUDA 上为短边的 2 倍（1024），其他设备为短边。",
    ),
    "face_upscale": (
        "Face super-resolution",
        "人脸超分辨率",
        "以低于模板尺寸处理的人脸裁剪用 Real-ESRGAN（而非双三次插值）放大回模板尺寸；"
        "auto：CUDA 上且模型已在本机时开启。",
    ),
    "upscale": ("Super-resolution", "超分辨率", "成品放大倍数：1（关闭）、2 或 4（Real-ESRGAN）。"),
    "upscale_tile": ("Super-resolution tile", "超分分块", "超分辨率的分块边长（像素），限制内存。"),
    "upscale_overlap": ("Tile overlap", "分块重叠", "每个分块越过边缘看到的像素数，用于无缝拼接。"),
    "face_restore": ("Face restoration (GFPGAN)", "人脸修复（GFPGAN）", "超分之后用 GFPGAN 修复生成的人脸。"),
    "face_restore_weight": ("Face restoration weight", "人脸修复权重", "混入 GFPGAN 修复结果的比例（0–1）。"),
    "background": ("Background", "背景", "保留背景；修复（整张图轻度重绘一遍，统一光线）；或替换背景。"),
    "background_prompt": ("New background", "新背景", "替换背景时要画的新背景（没有上传背景图时）。"),
    "background_strength": ("Background restore strength", "背景修复强度", "背景修复的重绘强度。"),
    "background_tile": ("Background tile", "背景分块", "背景重绘的分块边长（像素，8 的倍数）。"),
}


def readable(name: str) -> str:
    """``grad_accum`` → ``Grad accum`` (for a field this table does not know yet)."""
    return name.replace("_", " ").capitalize()


def field_texts(classes: tuple[type, ...]) -> dict[str, dict[str, str]]:
    """``{"en": {...}, "zh-CN": {...}}`` with ``field.<name>`` and ``help.<Class>.<name>`` of every field."""
    en: dict[str, str] = {}
    zh: dict[str, str] = {}
    for cls in classes:
        for name, field in cls.model_fields.items():  # type: ignore[attr-defined]
            en_label, zh_label, zh_help = FIELDS.get(name, (readable(name), "", ""))
            help_key = f"help.{cls.__name__}.{name}"  # seed means one thing in training, another here
            en[f"field.{name}"], en[help_key] = en_label, field.description or ""
            zh[f"field.{name}"], zh[help_key] = zh_label or en_label, zh_help or field.description or ""
    return {"en": en, "zh-CN": zh}


__all__ = ["FIELDS", "field_texts", "readable"]
