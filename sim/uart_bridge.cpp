// A simulated board: a Verilated design with ports clk, rst, rx, tx, its UART pins
// bridged to a pseudo-terminal, so host code opens it with pyserial like a real board.
//
// Usage: uart_bridge --divisor N
//
// Prints one JSON line {"port": "/dev/pts/N"} on stdout, then simulates until SIGTERM
// or SIGINT (exit code 0). Bytes written to the port are sent on rx (8N1, LSB first,
// N cycles per bit, back to back); frames the design sends on tx are decoded mid-bit
// and written to the port. darbgen/sim/board_sim.py builds it with
// `verilator --prefix Vboard`, hence the fixed model name.

#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <verilated.h>

#include "Vboard.h"

namespace {

// Look at the pty only this often: a syscall per cycle would cost more than the design.
constexpr uint64_t POLL_CYCLES = 256;
// After this many cycles with no traffic, sleep in poll() between polls.
constexpr uint64_t IDLE_CYCLES = uint64_t(1) << 20;
constexpr int IDLE_POLL_MS = 10;
// Read from the pty only while fewer bytes than this wait for rx: the pty's own buffer
// then fills and blocks the client, the flow control a real UART link gets from
// the host's driver.
constexpr size_t TO_DEVICE_LOW = 1024;
// Bytes for the host beyond this (a client that never reads) are dropped, as a real
// board's would be.
constexpr size_t TO_HOST_MAX = size_t(1) << 20;
constexpr int RESET_CYCLES = 4;

volatile sig_atomic_t stop_requested = 0;

void on_signal(int) { stop_requested = 1; }

int usage(const char *argv0) {
    std::fprintf(stderr, "usage: %s --divisor N  (clock cycles per UART bit, N >= 2)\n", argv0);
    return 2;
}

int open_pty(std::string &name) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (fd < 0 || grantpt(fd) != 0 || unlockpt(fd) != 0) return -1;
    const char *slave = ptsname(fd);
    if (!slave) return -1;
    name = slave;
    // Raw: no echo, no line editing, no CR/LF translation (pyserial sets this on open
    // too, but a plain `cat` of the port would not).
    termios tio{};
    if (tcgetattr(fd, &tio) != 0) return -1;
    cfmakeraw(&tio);
    if (tcsetattr(fd, TCSANOW, &tio) != 0) return -1;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) return -1;
    return fd;
}

}  // namespace

int main(int argc, char **argv) {
    long divisor = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--divisor") == 0 && i + 1 < argc) {
            char *end = nullptr;
            divisor = std::strtol(argv[++i], &end, 10);
            if (*end != '\0') return usage(argv[0]);
        } else {
            return usage(argv[0]);
        }
    }
    if (divisor < 2) return usage(argv[0]);

    struct sigaction sa{};
    sa.sa_handler = on_signal;   // no SA_RESTART: a signal ends a blocking poll()
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    std::string port;
    int pty = open_pty(port);
    if (pty < 0) {
        std::fprintf(stderr, "uart_bridge: cannot open a pseudo-terminal: %s\n",
                     std::strerror(errno));
        return 1;
    }
    std::printf("{\"port\": \"%s\"}\n", port.c_str());
    std::fflush(stdout);

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vboard>(context.get(), "board");
    auto step = [&] {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
    };
    top->rx = 1;
    top->rst = 1;
    for (int i = 0; i < RESET_CYCLES; ++i) step();
    top->rst = 0;

    std::deque<uint8_t> to_device;
    std::vector<uint8_t> to_host;
    // Host -> device: the frame on rx, start bit first, and the cycles spent in its bit.
    unsigned rx_frame = 0, rx_bits = 0;
    long rx_count = 0;
    // Device -> host: bit being received (IDLE, 0 = start ... 9 = stop, or WAIT_HIGH
    // after a bad stop bit), cycles to its middle, and the data bits so far.
    constexpr int IDLE = -1, WAIT_HIGH = -2;
    int tx_bit = IDLE;
    long tx_count = 0;
    unsigned tx_byte = 0;

    uint64_t cycle = 0, last_active = 0, bytes_in = 0, bytes_out = 0, frame_errors = 0;
    const auto started = std::chrono::steady_clock::now();
    uint8_t buf[4096];

    while (!stop_requested) {
        for (uint64_t n = 0; n < POLL_CYCLES; ++n, ++cycle) {
            if (rx_bits == 0 && !to_device.empty()) {
                rx_frame = (unsigned(to_device.front()) << 1) | 0x200u;  // start 0, stop 1
                to_device.pop_front();
                rx_bits = 10;
                rx_count = 0;
            }
            top->rx = rx_bits ? (rx_frame & 1u) : 1u;
            step();
            if (rx_bits && ++rx_count == divisor) {
                rx_count = 0;
                rx_frame >>= 1;
                --rx_bits;
            }

            const unsigned tx = top->tx;
            if (tx_bit == IDLE) {
                if (!tx) {
                    tx_bit = 0;
                    tx_count = divisor / 2;   // to the middle of the start bit
                }
            } else if (tx_bit == WAIT_HIGH) {
                if (tx) tx_bit = IDLE;
            } else if (--tx_count == 0) {
                tx_count = divisor;
                if (tx_bit == 0) {
                    tx_byte = 0;
                    tx_bit = tx ? IDLE : 1;   // high again: a glitch, not a start bit
                } else if (tx_bit <= 8) {
                    tx_byte |= tx << (tx_bit - 1);
                    ++tx_bit;
                } else if (tx) {
                    if (to_host.size() < TO_HOST_MAX) to_host.push_back(uint8_t(tx_byte));
                    ++bytes_out;
                    tx_bit = IDLE;
                } else {
                    ++frame_errors;
                    tx_bit = WAIT_HIGH;
                }
            }
            if (rx_bits || tx_bit != IDLE) last_active = cycle;
        }

        const bool idle = cycle - last_active > IDLE_CYCLES && to_device.empty()
                          && to_host.empty();
        pollfd pfd{pty, 0, 0};
        if (to_device.size() < TO_DEVICE_LOW) pfd.events |= POLLIN;
        if (!to_host.empty()) pfd.events |= POLLOUT;
        if (poll(&pfd, 1, idle ? IDLE_POLL_MS : 0) < 0) continue;   // EINTR: a signal
        if (pfd.revents & POLLIN) {
            // EIO (no client has the port open) and EAGAIN mean no data.
            ssize_t got = read(pty, buf, sizeof buf);
            if (got > 0) {
                to_device.insert(to_device.end(), buf, buf + got);
                bytes_in += uint64_t(got);
                last_active = cycle;
            }
        }
        if (pfd.revents & POLLHUP) {
            // No client has the port open. The kernel would keep what we write for the
            // next client, but a real board's bytes to a closed port are lost.
            to_host.clear();
            // poll() does not block on a hung-up pty: sleep instead.
            if (idle) usleep(IDLE_POLL_MS * 1000);
        } else if (pfd.revents & POLLOUT) {
            ssize_t put = write(pty, to_host.data(), to_host.size());
            if (put > 0) {
                to_host.erase(to_host.begin(), to_host.begin() + put);
            } else if (put < 0 && errno != EAGAIN && errno != EINTR) {
                to_host.clear();
            }
        }
    }

    top->final();
    close(pty);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fprintf(stderr,
                 "uart_bridge: %llu cycles in %.3f s (%.0f cycles/s), %llu bytes in, "
                 "%llu bytes out, %llu frame errors\n",
                 (unsigned long long)cycle, seconds, seconds > 0 ? cycle / seconds : 0.0,
                 (unsigned long long)bytes_in, (unsigned long long)bytes_out,
                 (unsigned long long)frame_errors);
    return 0;
}
