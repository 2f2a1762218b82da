"""Crypto payments: quotes, chain watchers (EVM: ETH/USDC; Solana: SOL/USDC), settlement, wallet linking."""
