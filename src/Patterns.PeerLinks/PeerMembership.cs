namespace Patterns.PeerLinks;

/// <summary>Whether a peer can be reached.</summary>
public enum PeerState
{
    /// <summary>Not linked yet, or the link broke and is being dialled again within <see cref="PeerLinksOptions.ReconnectGrace"/>.</summary>
    Connecting,

    /// <summary>Linked: messages flow.</summary>
    Up,

    /// <summary>
    /// Gone: it left (its host stopped, or it was disposed), nothing listens, or the link stayed broken longer than the
    /// grace. Its consumers are forgotten until it is back.
    /// </summary>
    Down,
}

/// <summary>One configured peer as this node sees it.</summary>
/// <param name="Address">Where it is dialled.</param>
/// <param name="NodeId">Its node id, once it has answered.</param>
/// <param name="State">Whether it can be reached.</param>
/// <param name="Since">When it entered <paramref name="State"/>.</param>
/// <param name="Reason">Why it is not up, when it is not.</param>
public sealed record PeerInfo(Uri Address, string? NodeId, PeerState State, DateTimeOffset Since, string? Reason);

/// <summary>A peer changed state.</summary>
/// <param name="peer">The peer, in its new state.</param>
public sealed class PeerChangedEventArgs(PeerInfo peer) : EventArgs
{
    /// <summary>Gets the peer, in its new state.</summary>
    public PeerInfo Peer { get; } = peer;
}

/// <summary>The peers of one node and their state, with an event on every change.</summary>
public sealed class PeerMembership
{
    private readonly Lock _gate = new();
    private readonly Dictionary<Uri, PeerInfo> _peers = [];

    internal PeerMembership()
    {
    }

    /// <summary>
    /// Raised on every state change of a peer, on the link's thread; handlers must not block. A peer that service
    /// discovery no longer lists is raised once more as <see cref="PeerState.Down"/>, then leaves <see cref="Peers"/>.
    /// </summary>
    public event EventHandler<PeerChangedEventArgs>? PeerChanged;

    /// <summary>Gets a snapshot of every configured peer.</summary>
    public IReadOnlyList<PeerInfo> Peers
    {
        get
        {
            lock (_gate)
            {
                return [.. _peers.Values];
            }
        }
    }

    /// <summary>Waits until every configured peer is <see cref="PeerState.Up"/>.</summary>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when all peers are up.</returns>
    public async Task WaitForAllUpAsync(CancellationToken cancellationToken = default)
    {
        var changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnChanged(object? sender, PeerChangedEventArgs e) => changed.TrySetResult();
        while (true)
        {
            PeerChanged += OnChanged;
            try
            {
                if (Peers.All(p => p.State == PeerState.Up))
                {
                    return;
                }

                await changed.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
                changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            finally
            {
                PeerChanged -= OnChanged;
            }
        }
    }

    internal void Set(PeerInfo peer)
    {
        lock (_gate)
        {
            if (_peers.TryGetValue(peer.Address, out var old) && old.State == peer.State && old.NodeId == peer.NodeId)
            {
                return;
            }

            _peers[peer.Address] = peer;
        }

        PeerChanged?.Invoke(this, new PeerChangedEventArgs(peer));
    }

    /// <summary>The peer is no longer one of this node's peers: a last <see cref="PeerState.Down"/> event, then it is forgotten.</summary>
    internal void Remove(Uri address, DateTimeOffset now, string reason)
    {
        PeerInfo gone;
        lock (_gate)
        {
            if (!_peers.Remove(address, out var old))
            {
                return;
            }

            gone = old with { State = PeerState.Down, Since = now, Reason = reason };
        }

        PeerChanged?.Invoke(this, new PeerChangedEventArgs(gone));
    }
}
