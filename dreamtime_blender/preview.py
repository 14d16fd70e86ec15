"""The latest preview: the "DreamTime Preview" image datablock and a 3D View overlay.

`prepare(event)` runs on the client's reader thread and decodes the PNG a `preview` event names
(png.py), so `apply(event)` on the main thread is one `pixels.foreach_set` and an update. The
overlay is drawn with the `gpu` module, with a builtin shader and a batch type (TRIS) that every
GPU backend of Blender 4.2-5.x supports; its shader is made lazily inside the draw callback
(there is no GPU context at register time, nor in background mode).
"""

from __future__ import annotations

import bpy

from . import png

IMAGE_NAME = "DreamTime Preview"
OVERLAY_PIXELS = 256  # overlay size in the 3D View (longest side, before UI scale)
MARGIN = 16
QUAD_TRIANGLES = ((0, 1, 2), (0, 2, 3))  # the overlay's quad (corners counter-clockwise from lower left)
SHADER = "IMAGE"  # a builtin shader every Blender 4.2-5.x GPU backend (OpenGL, Metal, Vulkan) has

_handle = None
_shader = None


def prepare(event: dict) -> None:
    """Reader thread: attach the decoded pixels to a preview event."""
    if event.get("type") == "preview":
        event["_pixels"], event["_width"], event["_height"] = png.read_rgba_for_blender(event["path"])


def image(width: int, height: int, name: str = IMAGE_NAME) -> bpy.types.Image:
    """The preview image (or another, `name`), made or resized to width x height."""
    img = bpy.data.images.get(name)
    if img is None:
        img = bpy.data.images.new(name, width, height, alpha=True)
    elif tuple(img.size) != (width, height):
        img.scale(width, height)
    return img


def apply(event: dict, name: str = IMAGE_NAME) -> bpy.types.Image | None:
    """Main thread: copy a prepared preview into the image (`name`: another one); None if it could not be read."""
    pixels = event.get("_pixels")
    if pixels is None:
        return None
    img = image(event["_width"], event["_height"], name)
    img.pixels.foreach_set(pixels)
    img.update()
    if img.preview is not None:
        img.preview.reload()
    _redraw_3d_views()
    return img


def _redraw_3d_views() -> None:
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


# ---------------------------------------------------------------------- viewport overlay
def _draw() -> None:
    """POST_PIXEL draw callback: the preview image in the 3D View's lower-left corner."""
    global _shader
    scene = bpy.context.scene
    img = bpy.data.images.get(IMAGE_NAME)
    if img is None or scene is None or not getattr(scene, "dreamtime", None) or not scene.dreamtime.show_overlay:
        return
    import gpu
    from gpu_extras.batch import batch_for_shader

    if _shader is None:
        _shader = gpu.shader.from_builtin(SHADER)
    width, height = img.size
    scale = OVERLAY_PIXELS * bpy.context.preferences.system.ui_scale / max(width, height, 1)
    x0, y0, x1, y1 = MARGIN, MARGIN, MARGIN + width * scale, MARGIN + height * scale
    batch = batch_for_shader(  # two triangles: TRI_FAN is deprecated, and Metal and Vulkan lack it
        _shader, "TRIS", {"pos": ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), "texCoord": ((0, 0), (1, 0), (1, 1), (0, 1))},
        indices=QUAD_TRIANGLES,
    )
    gpu.state.blend_set("ALPHA")
    _shader.bind()
    _shader.uniform_sampler("image", gpu.texture.from_image(img))
    batch.draw(_shader)
    gpu.state.blend_set("NONE")


def register() -> None:
    global _handle
    if _handle is None:
        _handle = bpy.types.SpaceView3D.draw_handler_add(_draw, (), "WINDOW", "POST_PIXEL")


def unregister() -> None:
    global _handle, _shader
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
    _handle, _shader = None, None
