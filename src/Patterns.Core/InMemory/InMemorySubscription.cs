using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.InMemory;

internal sealed class InMemorySubscription : TransportSubscription
{
    private readonly InMemoryQueue _queue;
    private readonly DeliveryHandler _handler;
    private readonly CancellationTokenSource _hardStop = new();
    private Task[] _workers = [];
    private int _dropped;
    private int _stopped;

    public InMemorySubscription(InMemoryQueue queue, SubscriptionRequest request, DeliveryHandler handler)
    {
        _queue = queue;
        Request = request;
        _handler = handler;
    }

    public override SubscriptionRequest Request { get; }

    internal Lane[] Lanes { get; set; } = [];

    public void Start()
    {
        var lanes = Lanes;
        var workers = new Task[lanes.Length];
        for (var i = 0; i < lanes.Length; i++)
        {
            var lane = lanes[i];
            workers[i] = Task.Run(() => RunAsync(lane));
        }

        _workers = workers;
    }

    public override async Task StopAsync(CancellationToken drainDeadline)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            _queue.Detach(this);
        }

        using (drainDeadline.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), _hardStop))
        {
            await Task.WhenAll(_workers).ConfigureAwait(false);
        }

        var dropped = Volatile.Read(ref _dropped);
        if (dropped > 0 && Interlocked.Exchange(ref _dropped, 0) > 0)
        {
            _queue.RecordDropped(dropped);
        }
    }

    private async Task RunAsync(Lane lane)
    {
        var reader = lane.Reader;
        var stop = _hardStop.Token;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var envelope))
            {
                if (stop.IsCancellationRequested)
                {
                    Interlocked.Increment(ref _dropped);
                    continue;
                }

                Settlement settlement;
                try
                {
                    settlement = await _handler(envelope, stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    Interlocked.Increment(ref _dropped);
                    continue;
                }
                catch (Exception ex)
                {
                    settlement = Settlement.DeadLetter($"The delivery handler threw {ex.GetType().Name}: {ex.Message}", ex);
                }

                Settle(envelope, settlement);
            }
        }
    }

    private void Settle(in Envelope envelope, in Settlement settlement)
    {
        switch (settlement.Kind)
        {
            case SettlementKind.Ack:
                break;
            case SettlementKind.Retry:
                _queue.Retry(envelope, settlement.Delay);
                break;
            default:
                _queue.DeadLetter(envelope, settlement);
                break;
        }
    }

}
