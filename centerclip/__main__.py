"""`python -m centerclip`: encode one video with several token-clustering schedules and show what
each costs (GFLOPs, milliseconds) and how close its embedding stays to no reduction."""

from __future__ import annotations

import time

from centerclip import cli
from centerclip.model.registry import DEFAULT_MODEL

DEMO_SCHEDULES = ("none", "kmedoids@3:4x49", "spectral@3:4x49", "pooling@3:4x49", "sparse@3:4x49", "kmedoids@2:4x60,4:2x49")


def demo(model: str | None = None, schedules: tuple[str, ...] = DEMO_SCHEDULES, frames: int | None = None) -> list[dict]:
    # Imported here, so that --help answers at once.
    import torch

    from centerclip import EncoderConfig, Schedule, VideoEncoder
    from centerclip.model.flops import VisionShape, video_cost

    with torch.inference_mode():
        torch.manual_seed(0)
        encoder = VideoEncoder.create(EncoderConfig(model=model, frames=frames)).eval()
        frames, (height, width) = encoder.frames, encoder.image_size
        # A video whose frames drift slowly, like real footage: consecutive frames are redundant.
        video = torch.randn(1, 1, 3, height, width) + 0.2 * torch.randn(1, frames, 3, height, width).cumsum(1) / frames
        reference = encoder.encode_video(video)
        shape = VisionShape.of_model(encoder.clip)
        rows = []
        for text in schedules:
            schedule = Schedule.parse(text)
            encoder.set_schedule(schedule)
            encoder.encode_video(video)  # warm-up
            start = time.perf_counter()
            embedding = encoder.encode_video(video)
            elapsed = time.perf_counter() - start
            cost = video_cost(shape, schedule, frames)
            rows.append({"schedule": str(schedule), "gflops": cost.gflops, "ms": elapsed * 1e3,
                         "cosine_to_none": float(embedding @ reference.T)})
        return rows


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(prog="python -m centerclip", description=__doc__)
    parser.add_argument("--model", help=f"open_clip model name (default: the built-in {DEFAULT_MODEL})")
    parser.add_argument("--frames", type=int, help="frames per video (default: the model's)")
    parser.add_argument("--schedule", action="append", help="a schedule string such as kmedoids@3:4x49 (repeatable)")
    args = parser.parse_args(argv)
    rows = demo(args.model, tuple(args.schedule or DEMO_SCHEDULES), args.frames)
    print(f"{'schedule':28s} {'GFLOPs':>8s} {'ms':>8s} {'cos(none)':>10s}")
    for row in rows:
        print(f"{row['schedule']:28s} {row['gflops']:8.2f} {row['ms']:8.1f} {row['cosine_to_none']:10.4f}")


if __name__ == "__main__":
    cli.run(main)
