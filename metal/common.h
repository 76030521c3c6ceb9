// Shared helpers for the kernels in this folder, passed to every kernel as its
// `header`. Kernels are written in MLX's style: float accumulation, the
// storage type only on the final write.
#pragma once
