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
        }
    }

    public void Close() => _channel.Writer.TryComplete();
}
