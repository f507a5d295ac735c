// Behavioural model of the part of Lattice ECP5's MULT18X18D block that speqmoe uses, for
// simulating designs elaborated for an ECP5 board (hw.fp.Fp16Multiplier with stages >= 2 puts
// its significand registers in the block: docs/fpga.md, "DSP registers").
//
// Modelled: an unsigned 18 x 18 -> 36-bit product (SIGNEDA = SIGNEDB = 0, SOURCEA = SOURCEB = 0,
// C unused); the A and B input registers and the output register, each either absent ("NONE") or
// clocked by CLK0 and enabled by CE0 with a synchronous RST0 (the block's defaults for _CE and
// _RST); registers start at 0, as the global set/reset leaves them. Anything else (the pipeline
// register, other clocks, signed operands, cascades) is not modelled: the model stops the
// simulation with $fatal rather than compute something else.
`timescale 1ns/1ps
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE",
    parameter REG_INPUTB_CLK = "NONE",
    parameter REG_INPUTC_CLK = "NONE",
    parameter REG_PIPELINE_CLK = "NONE",
    parameter REG_OUTPUT_CLK = "NONE",
    parameter REG_INPUTA_CE = "CE0",
    parameter REG_INPUTB_CE = "CE0",
    parameter REG_OUTPUT_CE = "CE0",
    parameter REG_INPUTA_RST = "RST0",
    parameter REG_INPUTB_RST = "RST0",
    parameter REG_OUTPUT_RST = "RST0",
    parameter RESETMODE = "SYNC"
) (
    input  A0,
    input  A1,
    input  A2,
    input  A3,
    input  A4,
    input  A5,
    input  A6,
    input  A7,
    input  A8,
    input  A9,
    input  A10,
    input  A11,
    input  A12,
    input  A13,
    input  A14,
    input  A15,
    input  A16,
    input  A17,
    input  B0,
    input  B1,
    input  B2,
    input  B3,
    input  B4,
    input  B5,
    input  B6,
    input  B7,
    input  B8,
    input  B9,
    input  B10,
    input  B11,
    input  B12,
    input  B13,
    input  B14,
    input  B15,
    input  B16,
    input  B17,
    input  SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  CLK0, CE0, RST0,
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11,
    output P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22, P23,
    output P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35
);
    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg  [17:0] a_q = 18'd0, b_q = 18'd0;
    reg  [35:0] p_q = 36'd0;
    wire [17:0] a_in = (REG_INPUTA_CLK == "CLK0") ? a_q : a;
    wire [17:0] b_in = (REG_INPUTB_CLK == "CLK0") ? b_q : b;
    wire [35:0] prod = a_in * b_in;
    wire [35:0] p = (REG_OUTPUT_CLK == "CLK0") ? p_q : prod;

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0")
                || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
                || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0")
                || REG_INPUTC_CLK != "NONE" || REG_PIPELINE_CLK != "NONE"
                || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_OUTPUT_CE != "CE0"
                || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0"
                || REG_OUTPUT_RST != "RST0" || RESETMODE != "SYNC")
            $fatal(1, "MULT18X18D model: a register setting it does not model");
    end
    always @(*) if (SIGNEDA === 1'b1 || SIGNEDB === 1'b1 || SOURCEA === 1'b1 || SOURCEB === 1'b1)
        $fatal(1, "MULT18X18D model: signed operands or shift inputs are not modelled");

    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 18'd0;
            b_q <= 18'd0;
            p_q <= 36'd0;
        end else if (CE0) begin
            a_q <= a;
            b_q <= b;
            p_q <= prod;
        end
    end

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
