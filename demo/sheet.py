"""The contact sheet: per experiment a row of baseline samples over a row of guided ones, labelled."""
from PIL import Image, ImageDraw

TILE = 96      # pixels per 32x32 sample (3x, nearest)
LABEL = 150    # width of the label column
TITLE = 22


def _tile(image):
    """3x nearest; a wide (panorama) sample keeps its aspect."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    height, width = array.shape[:2]
    return Image.fromarray(array).resize((TILE * width // height, TILE), Image.NEAREST)


def contact_sheet(results, columns=8):
    rows = len(results)
    width = LABEL + columns * TILE
    height = rows * (TITLE + 2 * TILE + 8)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for r in results:
        s = r.effect.summary()
        draw.text((4, y + 4), f"{r.effect.method}: {s['metric']}  {s['baseline']:.3f} -> {s['guided']:.3f} "
                              f"(diff 95% CI {s['difference_95ci'][0]:+.3f}..{s['difference_95ci'][1]:+.3f}, "
                              f"n={s['n']})", fill="black")
        y += TITLE
        for label, images in (("baseline", r.baseline), (r.effect.method, r.guided)):
            draw.text((4, y + TILE // 2 - 6), label, fill="black")
            x = LABEL
            for image in images:
                tile = _tile(image)
                if x + tile.width > width:
                    break
                sheet.paste(tile, (x, y))
                x += tile.width
            y += TILE
        y += 8
    return sheet
