"""Methods that change the sampler's latent itself (Attend-and-Excite, Pix2Pix-Zero), in
sigma space: x = x0 + sigma * eps, and the model sees u = c_in * x (the diffusers latent).
"""


def input_space_descent(x, grad_x, step_size, c_in):
    """The reference's u <- u - step_size * dL/du on the model input u = c_in * x, written
    for x: dL/du = dL/dx / c_in, so x' = x - step_size * dL/dx / c_in^2."""
    return x - (step_size / c_in ** 2) * grad_x


def moved_latent_denoised(x, x_moved, denoised_moved, sigma, sigma_next):
    """The denoised prediction that makes a first-order step from the old x land where
    the same step from x_moved lands: D' = D(x') + sigma_next * (x' - x) / (sigma - sigma_next).

    Exact for Euler (and DDIM, which is Euler in sigma space); at the last step
    (sigma_next = 0) it is D(x'). Other samplers get a first-order approximation."""
    if sigma_next <= 0 or sigma <= sigma_next:
        return denoised_moved
    return denoised_moved + (x_moved - x) * (sigma_next / (sigma - sigma_next))
