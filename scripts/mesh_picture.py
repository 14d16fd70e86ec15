"""Render a run's mesh.glb to a PNG with matplotlib (for the README): python scripts/mesh_picture.py RUN_DIR OUT.png"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from backend.mesh import Z_UP_TO_Y_UP  # noqa: E402


def main(run_dir: str, out: str) -> None:
    mesh = trimesh.load(f"{run_dir}/mesh.glb", force="mesh")
    mesh.apply_transform(np.linalg.inv(Z_UP_TO_Y_UP))  # glTF is y-up; back to the field's z-up
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    face_colors = colors[mesh.faces].mean(1)
    light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    shade = 0.35 + 0.65 * np.clip(mesh.face_normals @ light, 0, 1)
    fig = plt.figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot(projection="3d")
    ax.add_collection3d(Poly3DCollection(mesh.vertices[mesh.faces], facecolors=face_colors * shade[:, None], linewidths=0))
    ax.set_xlim(-0.7, 0.7), ax.set_ylim(-0.7, 0.7), ax.set_zlim(-0.7, 0.7)
    ax.view_init(elev=30, azim=-60)
    ax.set_axis_off()
    fig.savefig(out, bbox_inches="tight")


if __name__ == "__main__":
    main(*sys.argv[1:3])
