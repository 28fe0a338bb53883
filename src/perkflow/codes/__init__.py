"""Code generation shared by reward coupon pools and promotion campaigns."""
