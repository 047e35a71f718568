/* A progress line for long jobs ("  sampling  12/50  3.4 it/s  ETA 0:11")
 * redrawn in place on a terminal, and interruption by request. */
#include <time.h>

#include "core/run/run.h"

volatile sig_atomic_t dfx__abort_flag;

void dfx_abort_request(void)
{
    dfx__abort_flag = 1;
}

void dfx_abort_reset(void)
{
    dfx__abort_flag = 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void draw(dfx__progress *p, bool final)
{
    double el = now() - p->t0;
    double rate = el > 0 ? (double)(p->done - p->first) / el : 0;
    long eta = rate > 0 ? (long)((double)(p->total - p->done) / rate + 0.5) : 0;
    long shown = final ? (long)(el + 0.5) : eta;
    char clock[32];
    if (shown >= 3600)
        snprintf(clock, sizeof clock, "%ld:%02ld:%02ld", shown / 3600, shown / 60 % 60, shown % 60);
    else
        snprintf(clock, sizeof clock, "%ld:%02ld", shown / 60, shown % 60);
    fprintf(p->out, "\r  %s %lld/%lld  %s%s%.2f it/s  %s %s  ", p->label, (long long)p->done,
            (long long)p->total, p->note, p->note[0] ? "  " : "", rate, final ? "took" : "ETA", clock);
    if (final)
        fputc('\n', p->out);
    fflush(p->out);
}

void dfx__progress_start(dfx__progress *p, FILE *out, bool tty, const char *label, int64_t total)
{
    p->out = out;
    p->tty = tty;
    p->label = label;
    p->total = total;
    p->done = 0;
    p->first = 0;
    p->note[0] = 0;
    p->t0 = p->last = now();
}

void dfx__progress_tick(dfx__progress *p)
{
    p->done++;
    if (!p->out || !p->tty)
        return;
    double t = now();
    if (t - p->last >= 0.1 || p->done == p->total) {
        p->last = t;
        draw(p, false);
    }
}

void dfx__progress_end(dfx__progress *p)
{
    if (p->out && p->tty)
        draw(p, true);
}
