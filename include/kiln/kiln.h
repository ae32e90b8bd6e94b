/* Kiln: Erlang-style processes on every core, in C. Include this one. */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include "kiln/error.h"
#include "kiln/term.h"
#include "kiln/runtime.h"
#include "kiln/process.h"
#include "kiln/timer.h"
#include "kiln/io.h"
#include "kiln/node.h"
#include "kiln/gen_server.h"
#include "kiln/supervisor.h"
#include "kiln/gen_statem.h"
#include "kiln/gen_stage.h"
#include "kiln/application.h"
#include "kiln/etf.h"

#endif
