"""AXI4 and AXI4-Lite interface signatures, seen from the master.

Members carry the AXI signal names, so the flattened Verilog ports of a component member
``m_axi`` are ``m_axi__awvalid`` etc. (cocotbext-axi finds them with
``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``). The read half is
:class:`hw.dma.AxiReadSignature`.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.dma import AxiReadSignature

__all__ = ["AxiReadSignature", "AxiWriteSignature", "AxiSignature", "AxiLiteSignature"]


def _check_widths(addr_width, data_width, id_width):
    if not isinstance(addr_width, int) or not 13 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer in 13..64, not {addr_width!r}")
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"data_width must be 32..1024 bits, a power of two, not {data_width!r}")
    if not isinstance(id_width, int) or id_width < 1:
        raise ValueError(f"id_width must be a positive integer, not {id_width!r}")


def _write_members(addr_width, data_width, id_width):
    return {
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


class AxiWriteSignature(wiring.Signature):
    """AXI4 write channels (AW, W, B) seen from the master."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_widths(addr_width, data_width, id_width)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        super().__init__(_write_members(addr_width, data_width, id_width))

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (isinstance(other, AxiWriteSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AxiWriteSignature(addr_width={self._addr_width}, "
                f"data_width={self._data_width}, id_width={self._id_width})")


class AxiSignature(wiring.Signature):
    """A full AXI4 master: the read channels of :class:`AxiReadSignature` and the write
    channels of :class:`AxiWriteSignature` under one prefix."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_widths(addr_width, data_width, id_width)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        members = dict(AxiReadSignature(addr_width=addr_width, data_width=data_width,
                                        id_width=id_width).members.items())
        members.update(_write_members(addr_width, data_width, id_width))
        super().__init__(members)

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (isinstance(other, AxiSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AxiSignature(addr_width={self._addr_width}, "
                f"data_width={self._data_width}, id_width={self._id_width})")


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite (32-bit data) seen from the master; a slave uses ``In(AxiLiteSignature(..))``."""

    def __init__(self, *, addr_width: int = 12):
        if not isinstance(addr_width, int) or not 2 < addr_width <= 32:
            raise ValueError(f"addr_width must be an integer in 3..32, not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)

    def __eq__(self, other):
        return isinstance(other, AxiLiteSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self._addr_width})"
