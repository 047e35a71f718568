/* dfx for applications: the umbrella header. */
#ifndef DFX_DFX_H
#define DFX_DFX_H

#include "dfx/json.h"
#include "dfx/nn.h"
#include "dfx/ops.h"
#include "dfx/option.h"
#include "dfx/pipeline.h"
#include "dfx/plugin.h"
#include "dfx/rng.h"
#include "dfx/safetensors.h"
#include "dfx/status.h"
#include "dfx/tensor.h"
#include "dfx/text.h"

#endif
