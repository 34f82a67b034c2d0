"""Simulated models that log realistic records for the two example schemas.

``SimulatedModel("vibration", seed=1)`` is one device running one model: it yields the JSON
dicts an inference app would send to the agent (see ``schemas/records.py``), binary fields
as base64 and timestamps as RFC 3339, deterministic for a given seed (and, for images, for a
given Pillow being importable or not). The values are shaped like production data, not
uniform noise, because compression ratios and sampling decisions depend on that shape:

vibration (a pump-monitoring PC at one plant, watching a few pumps)
    temperatures drift around each pump's operating point with a daily cycle; rpm sits near
    a few motor set points; a 16-band spectrum decays from the running speed with harmonics
    added when a pump develops a fault; operators rotate through three shifts; notes are
    mostly empty or canned, sometimes with a phone number or e-mail in them; GPS is the
    plant's position with receiver jitter; the model's confidence is skewed high and lower
    when it is wrong.

image_classifier (a kiosk with a few cameras over a shelf of ~50 products)
    thumbnails are real 96x96 JPEGs (1.5-3 KB) cut from a few hundred deterministic product
    renderings, each frame shifted and relit so no two are byte-equal. Without Pillow they
    are synthetic stand-ins: zlib-compressed gradient noise of similar size (1.5-3 KB) and
    entropy, framed by the JPEG start and end markers.
    Scores are a softmax over all products, top five sorted, summing to at most 1.

Feedback records (``records(n, feedback_ratio=...)``) label earlier predictions of this
device, preferring the uncertain ones, as a labelling queue would.
"""

from __future__ import annotations

import base64
import io
import math
import random
import zlib
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

__all__ = ["MODELS", "SimulatedModel", "thumbnails_are_jpeg"]

MODELS = ("vibration", "image_classifier")
EPOCH = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday: simulated clocks start here

try:
    from PIL import Image, ImageDraw
except ImportError:  # the demo's and tests' environments need not have Pillow
    Image = ImageDraw = None  # type: ignore[assignment]


def thumbnails_are_jpeg() -> bool:
    """Whether image thumbnails are real JPEGs (Pillow importable) or synthetic stand-ins."""
    return Image is not None


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid7(moment: datetime, rng: random.Random) -> str:
    """A UUIDv7 for ``moment`` whose random bits come from ``rng``, so ids repeat per seed."""
    millis = int(moment.timestamp() * 1000)
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    return str(UUID(int=value))


class SimulatedModel:
    """One device running one example model; every method draws from one seeded stream."""

    def __init__(self, schema_name: str, *, seed: int, model_version: str | None = None, start: datetime = EPOCH) -> None:
        if schema_name not in MODELS:
            raise ValueError(f"no simulation for model {schema_name!r} (have {', '.join(MODELS)})")
        self.schema_name = schema_name
        self.seed = seed
        self._rng = random.Random(f"{schema_name}/{seed}")
        self._clock = start + timedelta(seconds=self._rng.uniform(0, 3600))
        self._open: deque[tuple[str, float, str]] = deque(maxlen=2000)  # (id, confidence, truth)
        if schema_name == "vibration":
            self.model_version = model_version or self._rng.choice(["2.3.0", "2.3.1", "2.4.0"])
            self._plant = _VibrationPlant(self._rng)
        else:
            self.model_version = model_version or self._rng.choice(["0.9.4", "1.0.0", "1.1.2"])
            self._plant = _Kiosk(self._rng)

    @property
    def now(self) -> datetime:
        """The simulated clock: when the last record was made."""
        return self._clock

    def predictions(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` prediction records, in simulated time order."""
        for _ in range(n):
            yield self._prediction()

    def feedback(self) -> dict[str, Any] | None:
        """A feedback record for an earlier unlabelled prediction, or None if there is none."""
        if not self._open:
            return None
        # Labelling queues favour uncertain predictions: take the least confident of a few.
        picks = [self._rng.randrange(len(self._open)) for _ in range(3)]
        index = min(picks, key=lambda i: self._open[i][1])
        record_id, _, truth = self._open[index]
        del self._open[index]
        self._clock += timedelta(seconds=self._rng.expovariate(1 / 2.0))
        record = {
            "kind": "feedback",
            "model": self.schema_name,
            "model_version": self.model_version,
            "record_id": _uuid7(self._clock, self._rng),
            "prediction_id": record_id,
            "source": self._plant.labeller(self._rng),
            "feedback": self._plant.feedback(self._rng, truth),
        }
        return record

    def records(self, n: int, feedback_ratio: float = 0.05) -> Iterator[dict[str, Any]]:
        """``n`` records: predictions with about ``feedback_ratio`` of them feedback on earlier ones."""
        for _ in range(n):
            if self._open and self._rng.random() < feedback_ratio:
                record = self.feedback()
                if record is not None:
                    yield record
                    continue
            yield self._prediction()

    def _prediction(self) -> dict[str, Any]:
        self._clock += timedelta(seconds=self._rng.expovariate(1 / self._plant.mean_interval_s))
        inputs, outputs, truth = self._plant.observe(self._rng, self._clock)
        record_id = _uuid7(self._clock, self._rng)
        self._open.append((record_id, outputs["confidence"], truth))
        return {
            "kind": "prediction",
            "model": self.schema_name,
            "model_version": self.model_version,
            "record_id": record_id,
            "inputs": inputs,
            "outputs": outputs,
        }


FAULTS = ("imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race", "cavitation")
SITES = (  # (name, lat, lon): pumping stations and plants
    ("rotterdam-botlek", 51.8787, 4.3111),
    ("duisburg-ruhrort", 51.4545, 6.7440),
    ("lyon-feyzin", 45.6722, 4.8583),
    ("gdansk-port", 54.3945, 18.6655),
    ("bilbao-zierbena", 43.3524, -3.0832),
    ("antwerp-zandvliet", 51.3571, 4.3023),
)
OPERATORS = (
    "j.devries", "m.kowalski", "a.garcia", "l.moreau", "s.schneider", "p.janssen",
    "k.nowak", "e.fernandez", "t.dubois", "r.weber", "n.peeters", "o.lopez",
)
NOTES = (
    "ok", "checked", "normal noise", "greased bearing", "seal weeping slightly",
    "louder than usual", "vibration after restart", "valve cycled", "filter swapped",
    "coupling guard loose", "awaiting parts", "inspected, no action", "hot to the touch",
)
CONTACT_NOTES = (
    "call {name} on +31 6 {a:04d} {b:04d} if it trips again",
    "parts ordered, ask {email}",
    "vendor tech ({email}) visits thursday",
    "night shift: ring 0{a:03d} {b:06d}",
    "escalated to {email}, tel +49 151 {a:04d}{b:04d}",
)


class _Pump:
    def __init__(self, rng: random.Random, site: str, number: int) -> None:
        self.serial = f"PMP-{rng.randint(1000, 9999)}-{number:04d}"
        self.operating_c = rng.uniform(48, 68)
        self.drift_c = 0.0
        self.set_points = rng.sample([1480, 1780, 2960, 3560, 990], k=2)
        self.set_point = self.set_points[0]
        self.fault: str | None = None
        self.severity = 0.0
        self.base_level = rng.uniform(0.8, 1.4)
        self.decay = rng.uniform(0.18, 0.32)


class _VibrationPlant:
    mean_interval_s = 6.0

    def __init__(self, rng: random.Random) -> None:
        self.site, self.lat, self.lon = rng.choice(SITES)
        self.pumps = [_Pump(rng, self.site, i + 1) for i in range(rng.randint(3, 6))]
        domain = self.site.split("-")[0] + ".plant.example"
        self.crew = [f"{name}@{domain}" for name in rng.sample(OPERATORS, k=6)]
        self.domain = domain

    def operator(self, moment: datetime) -> str:
        shift = moment.hour // 8  # 00-08, 08-16, 16-24
        return self.crew[(moment.toordinal() * 3 + shift) % len(self.crew)]

    def observe(self, rng: random.Random, moment: datetime) -> tuple[dict[str, Any], dict[str, Any], str]:
        pump = rng.choice(self.pumps)
        # Faults develop slowly and are repaired after a while.
        if pump.fault is None and rng.random() < 0.002:
            pump.fault, pump.severity = rng.choice(FAULTS), 0.05
        elif pump.fault is not None:
            pump.severity = min(1.0, pump.severity + rng.uniform(0, 0.01))
            if rng.random() < 0.003:
                pump.fault, pump.severity = None, 0.0
        if rng.random() < 0.01:
            pump.set_point = rng.choice(pump.set_points)
        pump.drift_c = max(-4.0, min(4.0, pump.drift_c + rng.gauss(0, 0.05)))
        hour = moment.hour + moment.minute / 60
        daily = 3.5 * math.sin((hour - 9) / 24 * 2 * math.pi)
        heat = 9.0 * pump.severity if pump.fault in ("bearing_outer_race", "bearing_inner_race", "misalignment") else 0.0
        temperature = pump.operating_c + pump.drift_c + daily + heat + rng.gauss(0, 0.25)
        rpm = pump.set_point + round(rng.gauss(0, 4)) - (round(20 * pump.severity) if pump.fault == "cavitation" else 0)
        truth = pump.fault if pump.fault is not None and pump.severity > 0.15 else "normal"
        inputs: dict[str, Any] = {
            "temperature_c": round(temperature, 3),
            "rpm": rpm,
            "spectrum": self.spectrum(rng, pump),
            "operator_email": self.operator(moment),
            "lat": round(self.lat + rng.gauss(0, 0.00002), 7),
            "lon": round(self.lon + rng.gauss(0, 0.00002), 7),
            "measured_at": _rfc3339(moment - timedelta(milliseconds=rng.randint(5, 400))),
            "serial_number": pump.serial,
        }
        note = self.note(rng)
        if note is not None:
            inputs["note"] = note
        predicted, confidence = self.classify(rng, truth, pump.severity)
        anomaly = min(1.0, max(0.0, (0.1 + 0.85 * pump.severity if truth != "normal" else 0.06) + rng.gauss(0, 0.04)))
        outputs = {"predicted_class": predicted, "confidence": confidence, "anomaly_score": round(anomaly, 4)}
        return inputs, outputs, truth

    def spectrum(self, rng: random.Random, pump: _Pump) -> list[float]:
        # Energy decays from the running-speed band; faults add their characteristic harmonics.
        run_band = 1 if pump.set_point < 2000 else 2
        bands = []
        for i in range(16):
            level = pump.base_level * math.exp(-pump.decay * abs(i - run_band)) + 0.02
            if i == run_band:
                level *= 1.0 + (2.5 * pump.severity if pump.fault == "imbalance" else 0.0)
            if pump.fault == "misalignment" and i == 2 * run_band:
                level += 1.2 * pump.severity
            if pump.fault == "bearing_outer_race" and i in (9, 10):
                level += 0.9 * pump.severity
            if pump.fault == "bearing_inner_race" and i in (11, 12, 13):
                level += 0.7 * pump.severity
            if pump.fault == "cavitation" and i >= 12:
                level += 0.5 * pump.severity * rng.random()
            bands.append(round(level * rng.lognormvariate(0, 0.08), 5))
        return bands

    def note(self, rng: random.Random) -> str | None:
        draw = rng.random()
        if draw < 0.45:
            return None
        if draw < 0.70:
            return ""
        if draw < 0.93:
            return rng.choice(NOTES)
        name, _, _ = rng.choice(OPERATORS).partition(".")
        return rng.choice(CONTACT_NOTES).format(
            name=name.upper(), a=rng.randint(0, 9999), b=rng.randint(0, 999999) % 10000,
            email=f"{rng.choice(OPERATORS)}@{self.domain}",
        )

    def classify(self, rng: random.Random, truth: str, severity: float) -> tuple[str, float]:
        if rng.random() < (0.93 if truth == "normal" else 0.55 + 0.4 * severity):
            confidence = rng.betavariate(9, 1.3)
            predicted = truth
        else:
            confidence = rng.betavariate(3, 2.5)
            predicted = rng.choice(["normal", *FAULTS])
        return predicted, round(confidence, 4)

    def labeller(self, rng: random.Random) -> str:
        return rng.choices(["technician", "operator", "vendor_report"], weights=[6, 3, 1])[0]

    def feedback(self, rng: random.Random, truth: str) -> dict[str, Any]:
        label: dict[str, Any] = {"true_class": truth}
        if truth != "normal":
            label["repair_cost_eur"] = round(rng.lognormvariate(math.log(900), 0.7), 2)
        elif rng.random() < 0.3:
            label["repair_cost_eur"] = 0.0
        return label


PRODUCTS = (
    "oat_milk_1l", "whole_milk_1l", "skimmed_milk_1l", "greek_yogurt_500g", "butter_250g",
    "cheddar_200g", "mozzarella_125g", "eggs_6", "eggs_12", "orange_juice_1l",
    "apple_juice_1l", "cola_330ml", "cola_zero_330ml", "sparkling_water_1l5", "still_water_500ml",
    "espresso_beans_500g", "ground_coffee_250g", "black_tea_25", "green_tea_20", "cocoa_250g",
    "white_bread", "wholegrain_bread", "croissant_4", "baguette", "rice_cakes",
    "pasta_fusilli_500g", "spaghetti_500g", "basmati_rice_1kg", "tomato_passata", "chopped_tomatoes",
    "chickpeas_400g", "kidney_beans_400g", "tuna_can", "sardines_can", "olive_oil_500ml",
    "sunflower_oil_1l", "ketchup", "mayonnaise", "mustard", "peanut_butter",
    "strawberry_jam", "honey_350g", "cornflakes", "muesli_750g", "granola_bar_6",
    "dark_chocolate_100g", "milk_chocolate_100g", "salted_crisps", "paprika_crisps", "salted_peanuts",
)
BASE_SIZE = 112
THUMB_SIZE = 96
VARIANTS = 6  # renderings per product: 50 x 6 = 300 distinct base images


class _Kiosk:
    mean_interval_s = 4.0

    def __init__(self, rng: random.Random) -> None:
        kiosk = rng.randint(1, 400)
        self.cameras = [f"kiosk-{kiosk:03d}-cam-{i}" for i in range(1, rng.randint(2, 5))]
        self.camera_light = {camera: rng.uniform(-0.08, 0.08) for camera in self.cameras}
        # Shelf popularity is Zipf-like and differs per kiosk.
        order = list(range(len(PRODUCTS)))
        rng.shuffle(order)
        self.weights = [0.0] * len(PRODUCTS)
        for rank, product in enumerate(order):
            self.weights[product] = 1 / (rank + 1) ** 0.9
        self.confusable = {p: rng.sample(range(len(PRODUCTS)), k=3) for p in range(len(PRODUCTS))}

    def observe(self, rng: random.Random, moment: datetime) -> tuple[dict[str, Any], dict[str, Any], str]:
        product = rng.choices(range(len(PRODUCTS)), weights=self.weights)[0]
        camera = rng.choice(self.cameras)
        hour = moment.hour + moment.minute / 60
        # Store lights on 07-22, daylight from the windows in between.
        lit = 0.55 if 7 <= hour < 22 else 0.18
        daylight = max(0.0, math.sin((hour - 6) / 14 * math.pi)) * 0.2 if 6 <= hour < 20 else 0.0
        brightness = min(1.0, max(0.02, lit + daylight + self.camera_light[camera] + rng.gauss(0, 0.03)))
        quality = rng.betavariate(4, 1.5)  # low for motion blur, occlusion: the hard frames
        thumbnail = _thumbnail(rng, product, brightness)
        scores = self.scores(rng, product, quality)
        top = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:5]
        inputs = {
            "thumbnail": base64.b64encode(thumbnail).decode("ascii"),
            "camera_id": camera,
            "brightness": round(brightness, 4),
        }
        outputs = {
            "predicted_class": PRODUCTS[top[0]],
            "confidence": round(scores[top[0]], 5),
            "top_k_scores": [math.floor(scores[i] * 1e5) / 1e5 for i in top],  # floor: the sum stays <= 1
            "latency_ms": round(rng.lognormvariate(math.log(17), 0.18) + (40 if rng.random() < 0.02 else 0), 2),
        }
        return inputs, outputs, PRODUCTS[product]

    def scores(self, rng: random.Random, product: int, quality: float) -> list[float]:
        logits = [rng.gauss(0, 0.6) for _ in PRODUCTS]
        logits[product] += 1.5 + 7.0 * quality
        for other in self.confusable[product]:
            logits[other] += rng.uniform(0, 3.5) * (1.2 - quality)
        peak = max(logits)
        exps = [math.exp(x - peak) for x in logits]
        total = sum(exps)
        return [x / total for x in exps]

    def labeller(self, rng: random.Random) -> str:
        return rng.choices(["cashier", "labelling_team"], weights=[4, 1])[0]

    def feedback(self, rng: random.Random, truth: str) -> dict[str, Any]:
        return {"true_class": truth}


_BASES: dict[int, Any] = {}


def _base_image(product: int, variant: int) -> Any:
    """A deterministic rendering of a product package on a shelf (cached)."""
    key = product * VARIANTS + variant
    if key in _BASES:
        return _BASES[key]
    rng = random.Random(f"product/{product}/{variant}")
    shelf = tuple(rng.randint(150, 215) for _ in range(3))
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), shelf)
    draw = ImageDraw.Draw(image)
    hue = random.Random(f"product/{product}")  # a product keeps its colours across variants
    body = tuple(hue.randint(20, 235) for _ in range(3))
    accent = tuple(hue.randint(20, 235) for _ in range(3))
    tall = hue.random() < 0.5
    x0, y0 = rng.randint(12, 28), rng.randint(6, 20)
    width, height = (rng.randint(40, 56), rng.randint(72, 92)) if tall else (rng.randint(60, 84), rng.randint(48, 68))
    box = (x0, y0, min(BASE_SIZE - 2, x0 + width), min(BASE_SIZE - 2, y0 + height))
    if hue.random() < 0.4:
        draw.ellipse(box, fill=body, outline=(30, 30, 30))
    else:
        draw.rectangle(box, fill=body, outline=(30, 30, 30))
    band_y = box[1] + (box[3] - box[1]) // 3
    draw.rectangle((box[0] + 4, band_y, box[2] - 4, band_y + 13), fill=accent)
    for line in range(4):  # the "text" on the label
        y = band_y + 19 + line * 6
        if y < box[3] - 3:
            draw.line((box[0] + 5, y, box[0] + 5 + rng.randint(6, max(7, box[2] - box[0] - 10)), y), fill=(25, 25, 25))
    draw.line((0, BASE_SIZE - 6, BASE_SIZE, BASE_SIZE - 6), fill=(90, 80, 70), width=3)  # shelf edge
    # Sensor noise and a lighting gradient so it compresses like a photo, not a drawing.
    noise = Image.effect_noise((BASE_SIZE, BASE_SIZE), 24).convert("RGB")
    image = Image.blend(image, noise, 0.16)
    gradient = Image.linear_gradient("L").resize((BASE_SIZE, BASE_SIZE)).rotate(rng.choice([0, 90, 180, 270]))
    image = Image.composite(image, Image.new("RGB", image.size, (0, 0, 0)), gradient.point(lambda v: 170 + v // 3))
    _BASES[key] = image
    return image


def _thumbnail(rng: random.Random, product: int, brightness: float) -> bytes:
    """One camera frame of ``product``: a shifted, relit crop of a base rendering, as JPEG."""
    variant = rng.randrange(VARIANTS)
    if Image is None:
        return _synthetic_thumbnail(rng, product * VARIANTS + variant)
    base = _base_image(product, variant)
    dx, dy = rng.randint(0, BASE_SIZE - THUMB_SIZE), rng.randint(0, BASE_SIZE - THUMB_SIZE)
    gain = 0.6 + 0.8 * brightness
    frame = base.crop((dx, dy, dx + THUMB_SIZE, dy + THUMB_SIZE)).point(lambda v: min(255, int(v * gain)))
    out = io.BytesIO()
    frame.save(out, format="JPEG", quality=rng.randint(72, 88))
    return out.getvalue()


def _synthetic_thumbnail(rng: random.Random, image: int) -> bytes:
    """Without Pillow: zlib-compressed gradient noise, 2-5 KB of JPEG-like entropy."""
    base = random.Random(f"synthetic/{image}")
    side = 40 + base.randrange(12)
    ramp = base.randint(1, 6)
    pixels = bytes(
        (x * ramp + y * 2 + base.randint(0, 40) + rng.randint(0, 24)) & 0xFF for y in range(side) for x in range(side)
    )
    return b"\xff\xd8\xff\xe0" + zlib.compress(pixels, 6) + b"\xff\xd9"
