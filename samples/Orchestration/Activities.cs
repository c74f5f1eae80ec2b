using Patterns.Orchestration;

namespace OrchestrationSample;

// Activities do the I/O: in a real system they call the warehouse, the payment provider and the carrier. Each public
// method that returns a task is an activity; [Activities] lets the source generator register them all, with direct calls,
// in o.AddActivitiesFromAssembly() (no reflection, so the sample also runs as a NativeAOT executable).
[Activities]
public sealed class Warehouse
{
    public Task Reserve(Order order)
    {
        Console.WriteLine($"  [{order.OrderId}] reserve {order.Quantity} x {order.Sku}");
        return Task.CompletedTask;
    }

    public Task Release(Order order)
    {
        Console.WriteLine($"  [{order.OrderId}] compensate: release {order.Quantity} x {order.Sku}");
        return Task.CompletedTask;
    }
}

[Activities]
public sealed class Payments
{
    public Task<string> Charge(Order order)
    {
        if (order.Card.StartsWith("0000", StringComparison.Ordinal))
        {
            throw new InvalidOperationException("card declined");
        }

        Console.WriteLine($"  [{order.OrderId}] charge {order.Amount:C}");
        return Task.FromResult($"pay-{order.OrderId}");
    }

    public Task Refund(string paymentId)
    {
        Console.WriteLine($"  [{paymentId}] compensate: refund");
        return Task.CompletedTask;
    }
}

[Activities]
public sealed class Shipping
{
    public Task Ship(Order order)
    {
        Console.WriteLine($"  [{order.OrderId}] hand over to the carrier");
        return Task.CompletedTask;
    }

    public Task CancelShipment(Order order)
    {
        Console.WriteLine($"  [{order.OrderId}] compensate: cancel the shipment");
        return Task.CompletedTask;
    }
}
