"""Offline STAC validation: pystac's own validator with every schema served locally.

``pystac.Item.validate()`` fetches the extension schemas from the internet, which tests here
cannot reach. :class:`OfflineValidator` is pystac's ``JsonSchemaSTACValidator`` with its schema
cache filled up front and fetching disabled:

* core Item / Catalog / Collection schemas: the ones pystac bundles (the official STAC 1.1.0
  JSON Schemas, shipped inside the pystac wheel);
* extension schemas (eo, projection, sat, view, raster, sar): compact Draft-07 schemas written
  here that check the type and range of every extension field the demo world emits, at the item
  level and in assets. They are a strict subset of the official ones (same field rules, fewer
  fields), registered under the official schema URIs.

An item that names any other schema fails validation instead of reaching for the network.
"""

from __future__ import annotations

from typing import Any

from pystac.validation import JsonSchemaSTACValidator

_NUM = {"type": "number"}
_INT = {"type": "integer"}


def _ext_schema(uri: str, fields: dict[str, Any], required: list[str] | None = None) -> dict:
    field_block: dict[str, Any] = {"type": "object", "properties": fields}
    props_block: dict[str, Any] = dict(field_block)
    if required:
        props_block = {**field_block, "required": required}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": uri,
        "type": "object",
        "required": ["stac_extensions"],
        "properties": {
            "stac_extensions": {"type": "array", "contains": {"const": uri}},
            "properties": props_block,
            "assets": {"type": "object", "additionalProperties": field_block},
        },
    }


EO_URI = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
EO11_URI = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
PROJ_URI = "https://stac-extensions.github.io/projection/v1.0.0/schema.json"
PROJ2_URI = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
SAT_URI = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
VIEW_URI = "https://stac-extensions.github.io/view/v1.0.0/schema.json"
RASTER_URI = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
SAR_URI = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"

_EO_BAND = {
    "type": "object",
    "minProperties": 1,
    "properties": {
        "name": {"type": "string"},
        "common_name": {
            "enum": [
                "coastal",
                "blue",
                "green",
                "red",
                "rededge",
                "yellow",
                "pan",
                "nir",
                "nir08",
                "nir09",
                "cirrus",
                "swir16",
                "swir22",
                "lwir",
                "lwir11",
                "lwir12",
            ]
        },
        "description": {"type": "string"},
        "center_wavelength": _NUM,
        "full_width_half_max": _NUM,
        "solar_illumination": {"type": "number", "minimum": 0},
    },
}
_RASTER_BAND = {
    "type": "object",
    "properties": {
        "nodata": {"oneOf": [_NUM, {"enum": ["nan", "inf", "-inf"]}]},
        "sampling": {"enum": ["area", "point"]},
        "data_type": {
            "enum": [
                "int8",
                "int16",
                "int32",
                "int64",
                "uint8",
                "uint16",
                "uint32",
                "uint64",
                "float16",
                "float32",
                "float64",
                "cint16",
                "cint32",
                "cfloat32",
                "cfloat64",
                "other",
            ]
        },
        "bits_per_sample": _INT,
        "spatial_resolution": _NUM,
        "unit": {"type": "string"},
        "scale": _NUM,
        "offset": _NUM,
    },
}

_EO_FIELDS = {
    "eo:bands": {"type": "array", "minItems": 1, "items": _EO_BAND},
    "eo:cloud_cover": {"type": "number", "minimum": 0, "maximum": 100},
    "eo:snow_cover": {"type": "number", "minimum": 0, "maximum": 100},
}


def _proj_fields(v2: bool) -> dict[str, Any]:
    code = (
        {"proj:code": {"type": ["string", "null"]}}
        if v2
        else {"proj:epsg": {"type": ["integer", "null"]}}
    )
    return {
        **code,
        "proj:wkt2": {"type": ["string", "null"]},
        "proj:shape": {"type": "array", "minItems": 2, "maxItems": 2, "items": _INT},
        "proj:transform": {
            "oneOf": [
                {"type": "array", "minItems": 6, "maxItems": 6, "items": _NUM},
                {"type": "array", "minItems": 9, "maxItems": 9, "items": _NUM},
            ]
        },
        "proj:bbox": {
            "oneOf": [
                {"type": "array", "minItems": 4, "maxItems": 4, "items": _NUM},
                {"type": "array", "minItems": 6, "maxItems": 6, "items": _NUM},
            ]
        },
        "proj:centroid": {
            "type": "object",
            "required": ["lat", "lon"],
            "properties": {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
            },
        },
    }


# The versions providers write (v1.0.0) and the ones pystac migrates items to on read.
EXTENSION_SCHEMAS: dict[str, dict[str, Any]] = {
    EO_URI: _ext_schema(EO_URI, _EO_FIELDS),
    EO11_URI: _ext_schema(EO11_URI, _EO_FIELDS),
    PROJ_URI: _ext_schema(PROJ_URI, _proj_fields(v2=False)),
    PROJ2_URI: _ext_schema(PROJ2_URI, _proj_fields(v2=True)),
    SAT_URI: _ext_schema(
        SAT_URI,
        {
            "sat:orbit_state": {"enum": ["ascending", "descending", "geostationary"]},
            "sat:relative_orbit": {"type": "integer", "minimum": 1},
            "sat:absolute_orbit": {"type": "integer", "minimum": 1},
            "sat:platform_international_designator": {"type": "string"},
            "sat:anx_datetime": {"type": "string", "format": "date-time"},
        },
    ),
    VIEW_URI: _ext_schema(
        VIEW_URI,
        {
            "view:off_nadir": {"type": "number", "minimum": 0, "maximum": 90},
            "view:incidence_angle": {"type": "number", "minimum": 0, "maximum": 90},
            "view:azimuth": {"type": "number", "minimum": 0, "maximum": 360},
            "view:sun_azimuth": {"type": "number", "minimum": 0, "maximum": 360},
            "view:sun_elevation": {"type": "number", "minimum": -90, "maximum": 90},
        },
    ),
    RASTER_URI: _ext_schema(
        RASTER_URI, {"raster:bands": {"type": "array", "minItems": 1, "items": _RASTER_BAND}}
    ),
    SAR_URI: _ext_schema(
        SAR_URI,
        {
            "sar:instrument_mode": {"type": "string", "minLength": 1},
            "sar:frequency_band": {"enum": ["P", "L", "S", "C", "X", "Ku", "K", "Ka"]},
            "sar:center_frequency": _NUM,
            "sar:polarizations": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": ["HH", "VV", "HV", "VH"]},
            },
            "sar:product_type": {"type": "string", "minLength": 1},
            "sar:resolution_range": {"type": "number", "minimum": 0},
            "sar:resolution_azimuth": {"type": "number", "minimum": 0},
            "sar:pixel_spacing_range": {"type": "number", "minimum": 0},
            "sar:pixel_spacing_azimuth": {"type": "number", "minimum": 0},
            "sar:looks_range": {"type": "number", "minimum": 0},
            "sar:looks_azimuth": {"type": "number", "minimum": 0},
            "sar:looks_equivalent_number": {"type": "number", "minimum": 0},
            "sar:observation_direction": {"enum": ["left", "right"]},
        },
        required=[
            "sar:instrument_mode",
            "sar:frequency_band",
            "sar:polarizations",
            "sar:product_type",
        ],
    ),
}


class OfflineSchemaError(LookupError):
    """A schema the offline validator does not hold was asked for."""


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator that never touches the network."""

    def __init__(self) -> None:
        super().__init__()
        self.schema_cache.update(EXTENSION_SCHEMAS)

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise OfflineSchemaError(
                f"schema {schema_uri} is not available offline; add it to "
                "harvest.demo.validation.EXTENSION_SCHEMAS"
            )
        return self.schema_cache[schema_uri]


def validate_item_dict(item: dict[str, Any], href: str | None = None) -> list[Any]:
    """Validate an item dictionary (core + its extensions) offline, as written (no migration).

    Raises:
        pystac.errors.STACValidationError: when the item does not match a schema.
        OfflineSchemaError: when the item names a schema not held offline.
    """
    from pystac.validation import validate_dict

    return validate_dict(item, href=href, validator=OfflineValidator())
