using System.Threading.Channels;
using Patterns.Gateway.Telemetry;

namespace Patterns.Gateway.Push;

/// <summary>One client's bounded buffer. The topic feed offers without waiting; the client's writer drains it.</summary>
internal sealed class PushConnection
{
    private readonly Channel<PushMessage> _channel;
    private readonly SlowClientPolicy _policy;
    private long _dropped;

    public PushConnection(int capacity, SlowClientPolicy policy)
    {
        _policy = policy;
        var options = new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = policy == SlowClientPolicy.DropOldest ? BoundedChannelFullMode.DropOldest : BoundedChannelFullMode.Wait,
        };
        _channel = policy == SlowClientPolicy.DropOldest
            ? Channel.CreateBounded<PushMessage>(options, _ =>
            {
                Interlocked.Increment(ref _dropped);
                GatewayTelemetry.PushDropped.Add(1);
            })
            : Channel.CreateBounded<PushMessage>(options);
    }

    public ChannelReader<PushMessage> Reader => _channel.Reader;

    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Gets or sets what ends the client's connection at once when it is cut off (a Server-Sent Events request is aborted).</summary>
    public Action? CutOff { get; set; }

    /// <summary>True once the client was cut off for being too slow.</summary>
    public bool Disconnected { get; private set; }

    /// <summary>Offers a message without waiting: drops the oldest, or cuts the client off, when the buffer is full.</summary>
    public void Offer(PushMessage message)
    {
        if (_channel.Writer.TryWrite(message) || _policy == SlowClientPolicy.DropOldest)
        {
            return;
        }

        if (!Disconnected)
        {
            Disconnected = true;
            GatewayTelemetry.PushDisconnected.Add(1);
            _channel.Writer.TryComplete();
            if (CutOff is { } cutOff)
            {
                // Off the publisher's thread: the client's writer may be blocked on a full socket and never see the completion.
                ThreadPool.UnsafeQueueUserWorkItem(static c => c(), cutOff, preferLocal: false);
            }
        }
    }

    /// <summary>Offers <see cref="PushMessage.KeepAlive"/> when nothing is waiting, so it never displaces a message nor cuts a client off.</summary>
    public bool TryOfferKeepAlive() => _channel.Reader.Count == 0 && _channel.Writer.TryWrite(PushMessage.KeepAlive);

    public void Close() => _channel.Writer.TryComplete();
}
