using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Streaming;

/// <summary>
/// A queue or subscription as a stream source: deliveries are written into a bounded channel (acknowledged once
/// written; a full channel holds the transport back) that the pipeline reads like any channel. On a graceful stop the
/// subscription drains into the channel, and the pipeline finishes what it took.
/// </summary>
internal sealed class TransportSourceDriver<T> : ChannelDriver<T>
{
    private readonly Channel<T> _channel;
    private readonly IServiceProvider _services;
    private readonly TransportAddress _address;
    private readonly string _group;
    private volatile bool _stopped;

    public TransportSourceDriver(RunContext run, IServiceProvider services, TransportAddress address, string group)
        : this(run, services, address, group, Channel.CreateBounded<T>(new BoundedChannelOptions(run.Options.BufferCapacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        }))
    {
    }

    private TransportSourceDriver(RunContext run, IServiceProvider services, TransportAddress address, string group, Channel<T> channel)
        : base(run, channel.Reader, honorStop: false)
    {
        _channel = channel;
        _services = services;
        _address = address;
        _group = group;
    }

    public override bool ReportsStart => true;

    protected override bool EndedByStop => _stopped;

    public override async Task RunAsync()
    {
        var bus = _services.GetService<MessageBus>()
            ?? throw new InvalidOperationException("A transport source needs the Patterns services: call AddPatterns() or AddStreaming() on the host builder.");
        var serializer = _services.GetRequiredService<IMessageSerializer>();

        // Another process names the message by its logical type name; without the element type in the registry,
        // every message it sent would be dead-lettered as an unknown type. (In memory, names are never looked up.)
        bus.Registry.GetName(typeof(T));
        var logger = Run.Logger;
        var system = bus.Transport.SystemName;
        var writer = _channel.Writer;
        var subscription = await bus.Transport.SubscribeAsync(
            new SubscriptionRequest
            {
                Address = _address,
                ConsumerGroup = _group,
                Concurrency = 1,
                Capacity = Run.Options.BufferCapacity,
            },
            async (envelope, ct) =>
            {
                if (!MessageMaterializer.TryGet(envelope, bus.Registry, serializer, logger, system, _address.Name, _group, out T message, out var rejection))
                {
                    return rejection;
                }

                try
                {
                    await writer.WriteAsync(message, ct).ConfigureAwait(false);
                    return Settlement.Ack;
                }
                catch (Exception ex) when (ex is ChannelClosedException or OperationCanceledException)
                {
                    // The pipeline ended while the message waited for room: hand it back.
                    return Settlement.Retry(TimeSpan.Zero, ex);
                }
            },
            Run.AbortToken).ConfigureAwait(false);
        Run.Started?.TrySetResult();

        var stopping = Task.CompletedTask;
        using (Run.StopToken.Register(() => stopping = StopAsync(subscription)))
        {
            try
            {
                await base.RunAsync().ConfigureAwait(false);
            }
            finally
            {
                writer.TryComplete();
                await stopping.ConfigureAwait(false);
                await subscription.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private async Task StopAsync(TransportSubscription subscription)
    {
        _stopped = true;
        await subscription.StopAsync(Run.AbortToken).ConfigureAwait(false);
        _channel.Writer.TryComplete();
    }
}
