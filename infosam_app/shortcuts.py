"""Keyboard shortcuts and tooltips of the studio, in one table each (shown in the widget)."""

from __future__ import annotations

# action name -> (keys, description). Keys use napari's notation. Bound on the viewer and on the
# studio's own layers (a layer's defaults would otherwise win while it is selected).
SHORTCUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "accept": (("Enter",), "accept the mask as a new object (or replace the refined one)"),
    "clear": (("Escape",), "clear the prompts (and leave refine mode)"),
    "undo": (("Control-Z", "U"), "undo the last prompt; with no prompt, undo the last object change"),
    "toggle_label": (("T",), "toggle the next point: positive (green) / negative (red)"),
    "toggle_mode": (("B",), "switch between point prompts (click) and a box prompt (drag)"),
    "next_candidate": (("M",), "cycle through SAM's candidate masks"),
    "refine": (("R",), "refine the object under the mouse: its prompts come back; Enter replaces it"),
    "delete": (("D",), "delete the object under the mouse"),
    "toggle_model": (("C",), "compare: switch Base / Adapted model for the same prompts"),
    "next_category": (("K",), "next category: objects accepted from now on take it"),
    "set_category": (("Shift-K",), "give the object under the mouse the current category"),
    "next_image": (("N", "PageDown"), "next image"),
    "previous_image": (("P", "PageUp"), "previous image"),
}


def shortcut_rows() -> list[tuple[str, str]]:
    """(keys as shown to the user, description) for the help table."""
    rows = []
    for keys, text in SHORTCUTS.values():
        shown = " / ".join(k.replace("Control-", "Ctrl+") for k in keys)
        rows.append((shown, text))
    return rows


MOUSE_HELP = (
    "Points mode: click to add a point (T toggles positive / negative). "
    "Box mode: drag a rectangle. The mask preview (cyan) follows every prompt."
)

TOOLTIPS: dict[str, str] = {
    "open_images": "Add image files (PNG, JPEG, TIFF; gray, RGB or 16-bit) to the project",
    "open_folder": "Add every image of a folder to the project",
    "open_project": "Open a project folder (restores images, objects and prompts)",
    "new_project": "Create an empty project in a folder of your choice",
    "image_list": "Images of the project with their number of accepted objects; click to show one",
    "model_type": "tiny: the bundled small SAM (fast on CPU). SAM ViT-B/L/H, MobileSAM, SAM 2 / 2.1: need their "
    "checkpoint files (chosen with …, the type is then detected from the file)",
    "checkpoint": "A SAM, SAM 2, MobileSAM or HQ-SAM checkpoint (.pth, .pt or .safetensors); its model type is "
    "detected when you choose it",
    "load_model": "Load the chosen model; the current one stays in use if loading fails",
    "precision": "The image encoder's precision. auto: bfloat16 where the hardware multiplies it natively (a CPU "
    "with AMX, a GPU with bf16), else float32; int8: dynamically quantized (CPU only, about 3 % embedding error). "
    "Remembered for the next start",
    "embedding_store": "Precomputed embeddings made by `infosam embed IMAGES --out STORE` (e.g. on a machine with a "
    "GPU): an image found there needs no encoder pass. A project setting",
    "method": "How SAM is adapted: which small part of it is trained",
    "distill": "Distillation from the pre-trained model while adapting (costs one teacher pass per step). "
    "InfoSAM keeps the relations the pre-trained model sees between image and mask; the paper measured +1 IoU "
    "over plain Adapter with SAM ViT-B, and it is the default for such models. On the bundled tiny model the "
    "default is None (plain PEFT): at 10 epochs, 3 seeds, InfoSAM with centred relations was -0.13 IoU points against "
    "plain Adapter on nuclei and -0.03 on CamVid road (the paper's formula -1.38 and -0.48; docs/results). "
    "Chosen on the tiny model, InfoSAM runs centred. The loss plot says when the distillation has collapsed. "
    "None: plain PEFT. "
    "Advanced: the paper's baselines (logit, pkd, pkt, ibd, vid, semckd, reviewkd, tinysam, mobilesam) with "
    "their default options, for comparison",
    "low_memory": "Recompute the image encoder's activations in the backward pass instead of keeping them: "
    "ViT-B at 1024 px keeps 0.16 instead of 5.3 GB per image (large SAMs on small GPUs); about 1/3 slower",
    "epochs": "Passes over your accepted objects",
    "time_budget": "Stop after this many minutes (0 = no limit); the best adapter so far is kept",
    "start": "Train on every accepted object (needs at least two) in the background",
    "cancel": "Stop training; the best adapter so far is kept and can be continued",
    "continue": "Train the last adapter further",
    "compare": "Which model predicts the masks: the base SAM or the adapted one (key C)",
    "load_adapter": "Load an adapter (.safetensors + .json) trained before",
    "relation_map": "Overlay the adapted model's InfoSAM relation map of this image (for the box prompt, or the "
    "whole image): where its relation module links image features to the mask. Needs an adapter trained with InfoSAM",
    "export_masks": "Write one label image per image (0 = background, 1..N objects)",
    "export_coco": "Write all objects as COCO instance annotations (RLE masks) with their categories and prompts",
    "label_layout": "Instance labels (object ids); one label image per category; or a semantic image whose "
    "pixels are category ids",
    "category": "Category of the objects you accept from now on (K cycles); the project's list",
    "add_category": "Add a category to the project",
    "color_by_category": "Colour the accepted objects by their category instead of one colour each",
    "import_labels": "Import existing annotations into the project (all or nothing): a folder of label images or "
    "binary masks matched to the project's images by file name, a COCO JSON file, or the selected napari Labels "
    "layer (for the image shown). Objects take their COCO category, else the current one",
    "export_adapter": "Write the adapted model's trained tensors (safetensors) and its config (JSON)",
    "export_model": "Write the adapted model for other tools: a SAM / SAM2 checkpoint with the adapter merged "
    "(LoRA, BitFit, decoder-only) or ONNX files (encoder + decoder, SAM's ONNX interface)",
}
