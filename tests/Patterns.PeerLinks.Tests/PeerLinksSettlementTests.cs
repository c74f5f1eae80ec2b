using System.Reflection;
using Grpc.Core;
using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>
/// The sending side of a link without a network: a forwarded message waits for its settlement, which the control
/// reader completes. The link is driven through its (non-public) proxy handler and control reader.
/// </summary>
public sealed class PeerLinksSettlementTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact(Timeout = 60_000)]
    public async Task MalformedFrameAfterASettlement_TheSettlementReadBeforeItStillCompletesItsMessage()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var link = new PeerLink(node, new Uri($"http://127.0.0.1:{Mesh.FreePort()}"));
        try
        {
            var forwarded = Forward(link, CancellationToken.None);
            forwarded.IsCompleted.Should().BeFalse("it waits for the peer's settlement");

            // One control message: the settlement of data message 1, then a frame a control stream never carries here.
            var settlements = new OutboundSequence(long.MaxValue, () => { });
            settlements.Append(PeerSession.SettlementEntry(1, Settlement.Ack));
            var batch = FrameBatch.Rent();
            settlements.Fill(batch);
            var bad = Frames.Int64Frame(FrameType.AnnounceAck, 1);
            bad.CopyTo(batch.Buffer, batch.Length);
            batch.Length += bad.Length;

            var read = (Task)typeof(PeerLink).GetMethod("ReadControlAsync", BindingFlags.NonPublic | BindingFlags.Instance)!
                .Invoke(link, [new OneMessage(batch), CancellationToken.None])!;
            var reading = async () => await read;
            await reading.Should().ThrowAsync<MalformedFrameException>();

            var settlement = await forwarded.AsTask().WaitAsync(Bound);
            settlement.Kind.Should().Be(SettlementKind.Ack, "the settlement read whole before the malformed frame counts as received, so it completes its message");
        }
        finally
        {
            await link.DisposeAsync();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task SendWithATokenAlreadyCancelled_IsCancelledAndNeverQueued()
    {
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [Mesh.FreePort()]), loggerFactory: Mesh.Logs);
        var link = new PeerLink(node, new Uri($"http://127.0.0.1:{Mesh.FreePort()}"));
        try
        {
            var forwarded = Forward(link, new CancellationToken(canceled: true));

            forwarded.IsCanceled.Should().BeTrue();
            link.BufferedBytes.Should().Be(0, "a message whose handler gave up before it was queued is never sent");
        }
        finally
        {
            await link.DisposeAsync();
        }
    }

    /// <summary>Forwards one message through a proxy of the peer's subscription, as the in-memory transport's worker would.</summary>
    private static ValueTask<Settlement> Forward(PeerLink link, CancellationToken cancellationToken)
    {
        var proxyType = typeof(PeerLink).GetNestedType("Proxy", BindingFlags.NonPublic)!;
        var session = typeof(PeerLink).GetField("_session", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(link)!; // a proxy of the current session
        var proxy = Activator.CreateInstance(proxyType, link, new SubscriptionInfo(5, AddressKind.Queue, "settle.q", "settle.q", 1, false), session)!;
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "settle.message", Payload = new byte[100] };
        return (ValueTask<Settlement>)proxyType.GetMethod("Handler")!.Invoke(proxy, [envelope, cancellationToken])!;
    }

    private sealed class OneMessage(FrameBatch batch) : IAsyncStreamReader<FrameBatch>
    {
        private bool _read;

        public FrameBatch Current => batch;

        public Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            var first = !_read;
            _read = true;
            return Task.FromResult(first);
        }
    }
}
