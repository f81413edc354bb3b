"""The ELM327's answer to ``0902`` (OBD-II mode 09 PID 02): the VIN in each common reply format, cars that give none,
and garbled answers that leave the VIN unknown without ever raising anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.vehicle import GarbledVin, parse_vin_reply
from firmware_protocols.identifiers import is_vin

VIN = "1D4GP00R55B123456"  # the example of ELM Electronics' ELM327 data sheet (multi-frame responses)

#: The replies as an ELM327 prints them (``\r`` line ends; the prompt is already cut off by the reader).
FORMATS = {
    # ISO 15765 (CAN), headers off: byte count, numbered lines (the data sheet's own example)
    "can": "014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r2: 42 31 32 33 34 35 36\r\r",
    "can_no_spaces": "014\r0:490201314434\r1:47503030523535\r2:42313233343536\r\r",
    "can_echo_searching": "0902\rSEARCHING...\r014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r"
    "2: 42 31 32 33 34 35 36\r\r",
    "can_lf": "014\r\n0: 49 02 01 31 44 34\r\n1: 47 50 30 30 52 35 35\r\n2: 42 31 32 33 34 35 36\r\n\r\n",
    # CAN, headers on (ATH1): ISO-TP first frame 10 14, consecutive frames 21, 22
    "can_headers": "7E8 10 14 49 02 01 31 44 34\r7E8 21 47 50 30 30 52 35 35\r7E8 22 42 31 32 33 34 35 36\r\r",
    "can_headers_no_spaces": "7E81014490201314434\r7E82147503030523535\r7E82242313233343536\r",
    "can_29bit": "18 DA F1 10 10 14 49 02 01 31 44 34\r18 DA F1 10 21 47 50 30 30 52 35 35\r"
    "18 DA F1 10 22 42 31 32 33 34 35 36\r",
    # two ECUs answer, their frames interleaved: the first complete VIN is the engine's
    "can_two_ecus": "7E8 10 14 49 02 01 31 44 34\r7E9 03 7F 09 12\r7E8 21 47 50 30 30 52 35 35\r"
    "7E8 22 42 31 32 33 34 35 36\r",
    # raw frames (ATCAF0), no header
    "can_raw_frames": "10 14 49 02 01 31 44 34\r21 47 50 30 30 52 35 35\r22 42 31 32 33 34 35 36\r",
    # ISO 9141-2 / KWP2000 / J1850: five messages, three NUL bytes of padding first
    "iso9141": "49 02 01 00 00 00 31\r49 02 02 44 34 47 50\r49 02 03 30 30 52 35\r49 02 04 35 42 31 32\r"
    "49 02 05 33 34 35 36\r\r",
    "iso9141_out_of_order": "49 02 02 44 34 47 50\r49 02 01 00 00 00 31\r49 02 03 30 30 52 35\r"
    "49 02 05 33 34 35 36\r49 02 04 35 42 31 32\r",
    "iso9141_headers": "48 6B 10 49 02 01 00 00 00 31 9F\r48 6B 10 49 02 02 44 34 47 50 E1\r"
    "48 6B 10 49 02 03 30 30 52 35 C7\r48 6B 10 49 02 04 35 42 31 32 B2\r48 6B 10 49 02 05 33 34 35 36 B7\r",
    "kwp_bus_init": "BUS INIT: ...OK\r49020100000031\r49020244344750\r49020330305235\r49020435423132\r49020533343536\r",
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_reply_format_gives_the_vin(name: str) -> None:
    assert parse_vin_reply(FORMATS[name]) == VIN


@pytest.mark.parametrize(
    "reply",
    ["NO DATA\r\r", "SEARCHING...\rNO DATA\r", "SEARCHING...\rUNABLE TO CONNECT\r", "CAN ERROR\r", "STOPPED\r",
     "?\r", "BUS INIT: ...ERROR\r", "", "\r\r", "7F 09 12\r", "7E8 03 7F 09 11\r", "48 6B 10 7F 09 12 00 5C\r"],
)  # fmt: skip
def test_a_car_that_gives_no_vin(reply: str) -> None:
    assert parse_vin_reply(reply) is None


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("41 0C 1A F8\r", "no 49 02"),  # an answer to another request
        ("014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 4F\r2: 42 31 32 33 34 35 36\r", "not a VIN"),  # an O
        ("014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r", "not a VIN"),  # a line lost: 10 characters
        ("014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r2: 42 31 32 33 34 35 0A\r", "non-printable"),
        ("7E8 10 14 49 02 01 31 44 34\r7E8 23 47 50 30 30 52 35 35\r", "consecutive frame"),  # a frame lost
        ("014\r0: 49 02 01 31 44 3\r", "odd number"),  # a digit lost
        ("49 02 01 00 00 00 31\r49 02 02 44 34 47 50\r", "not a VIN"),  # legacy: three messages lost
        ("014\r0: 49 02 01 6C 64 34\r1: 67 70 30 30 72 35 35\r2: 62 31 32 33 34 35 36\r", "not a VIN"),  # lower
    ],
)
def test_a_garbled_vin_is_refused_with_a_reason(reply: str, why: str) -> None:
    with pytest.raises(GarbledVin, match=why):
        parse_vin_reply(reply)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["49", "02", "01", "0:", "1:", "014", "7E8", "10", "14", "21", "31", "4F", " ",
                                 "\r", "NO DATA", "7F", "09", "48 6B 10", "\n", "SEARCHING...", "Z", "é"]),
                max_size=40))  # fmt: skip
def test_any_reply_gives_a_vin_none_or_garbled_never_another_error(parts: list[str]) -> None:
    try:
        vin = parse_vin_reply("".join(parts))
    except GarbledVin:
        return
    assert vin is None or is_vin(vin)


@given(st.text(max_size=200))
def test_any_text_gives_a_vin_none_or_garbled(text: str) -> None:
    try:
        vin = parse_vin_reply(text)
    except GarbledVin:
        return
    assert vin is None or is_vin(vin)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(VIN, True), ("LFVBA24K5NR000001", True), ("1D4GP00R55B12345", False), ("1D4GP00R55B1234567", False),
     ("1D4GP00R55B12345I", False), ("1D4GP00R55B12345O", False), ("1D4GP00Q55B123456", False),
     ("1d4gp00r55b123456", False), (VIN + "\n", False), (None, False), (17, False)],
)  # fmt: skip
def test_vin_shape(value: object, ok: bool) -> None:
    assert is_vin(value) is ok
