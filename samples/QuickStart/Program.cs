// QuickStart: request-response, pub/sub and a work queue in one console host, on the in-memory transport
// (or on RabbitMQ: dotnet run --project samples/QuickStart -- --RabbitMq amqp://guest:guest@localhost:5672/,
// or on peer links: dotnet run --project samples/QuickStart -- --PeerLinks http://127.0.0.1:0).
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using QuickStart;

var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.AddSingleton<Progress>();

// One transport for every pattern. Swap this line for another transport to leave the process, for example
// builder.AddPatterns(p => p.UseRabbitMq("amqp://guest:guest@localhost:5672/")); here the RabbitMq setting
// (--RabbitMq on the command line, or the environment variable) makes that switch.
if (builder.Configuration["RabbitMq"] is { Length: > 0 } rabbitMq)
{
    builder.AddPatterns(p => p.UseRabbitMq(rabbitMq));
}
else if (builder.Configuration["PeerLinks"] is { Length: > 0 } listen)
{
    // Peer links: this node listens on `listen` and links to its peers (none here; see samples/PeerLinks).
    builder.AddPatterns(p => p.UsePeerLinks(o => o.ListenUri = new Uri(listen)));
}
else
{
    builder.AddPatterns(p => p.UseInMemory());
}

builder.AddRequestResponse(r => r.AddHandler<GetQuote, Quote, GetQuoteHandler>());
builder.AddPubSub(ps => ps
    .Subscribe<OrderPlaced, BillingHandler>("orders.*")
    .Subscribe<OrderPlaced, ShippingHandler>("orders.*"));
builder.AddMessageQueue(q => q
    .AddQueue("emails", o => o.Capacity = 100)
    .AddConsumer<SendEmail, SendEmailHandler>("emails", o => o.Concurrency = 4));

using var host = builder.Build();
await host.StartAsync();

var client = host.Services.GetRequiredService<IRequestClient>();
var publisher = host.Services.GetRequiredService<IPublisher>();
var emails = host.Services.GetRequiredService<IQueueSender>();
var progress = host.Services.GetRequiredService<Progress>();

// Request-response: in memory the handler is called directly; on RabbitMQ the request goes through the broker.
var quote = await client.SendAsync<GetQuote, Quote>(new GetQuote("PATTERNS"));
Console.WriteLine($"request-response  GetQuote(PATTERNS) -> {quote.Price:0.00} {quote.Currency}");

try
{
    await client.SendAsync<GetQuote, Quote>(new GetQuote(""));
}
catch (RequestFailedException ex)
{
    Console.WriteLine($"request-response  GetQuote(\"\") failed remotely: {ex.RemoteErrorType}: {ex.RemoteMessage}");
}

// Pub/sub: each subscription (billing, shipping) receives every order once.
for (var i = 1; i <= 3; i++)
{
    await publisher.PublishAsync("orders.placed", new OrderPlaced($"order-{i}", 10m * i), new MessageOptions { PartitionKey = $"customer-{i % 2}" });
}

// Queue: four competing workers; each email is sent exactly once.
for (var i = 1; i <= 5; i++)
{
    await emails.SendAsync("emails", new SendEmail($"user{i}@example.com", "Your order"));
}

await progress.WaitAsync(orderDeliveries: 6, emails: 5);
await host.StopAsync();
Console.WriteLine($"done: {progress.OrderDeliveries} order deliveries, {progress.Emails} emails");
return 0;

namespace QuickStart
{
    public sealed record GetQuote(string Symbol);

    public sealed record Quote(string Symbol, decimal Price, string Currency);

    [MessageName("orders.placed")]
    public sealed record OrderPlaced(string OrderId, decimal Amount);

    public sealed record SendEmail(string To, string Subject);

    public sealed class GetQuoteHandler : IRequestHandler<GetQuote, Quote>
    {
        public ValueTask<Quote> HandleAsync(GetQuote request, CancellationToken cancellationToken)
        {
            ArgumentException.ThrowIfNullOrEmpty(request.Symbol);
            return new(new Quote(request.Symbol, 42.5m, "EUR"));
        }
    }

    public sealed class BillingHandler(Progress progress) : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
        {
            Console.WriteLine($"pub/sub           billing  charged {message.OrderId} {message.Amount:0.00}");
            progress.OrderHandled();
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ShippingHandler(Progress progress) : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
        {
            Console.WriteLine($"pub/sub           shipping packed  {message.OrderId}");
            progress.OrderHandled();
            return ValueTask.CompletedTask;
        }
    }

    public sealed class SendEmailHandler(Progress progress) : IMessageHandler<SendEmail>
    {
        public async ValueTask HandleAsync(SendEmail message, MessageContext context, CancellationToken cancellationToken)
        {
            await Task.Yield();
            Console.WriteLine($"queue             emailed  {message.To}");
            progress.EmailSent();
        }
    }

    /// <summary>Counts what the handlers did, so the sample can wait for them without sleeping.</summary>
    public sealed class Progress
    {
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _orders;
        private int _emails;
        private int _wantOrders = int.MaxValue;
        private int _wantEmails = int.MaxValue;

        public int OrderDeliveries => Volatile.Read(ref _orders);

        public int Emails => Volatile.Read(ref _emails);

        public void OrderHandled()
        {
            Interlocked.Increment(ref _orders);
            Check();
        }

        public void EmailSent()
        {
            Interlocked.Increment(ref _emails);
            Check();
        }

        public Task WaitAsync(int orderDeliveries, int emails)
        {
            Volatile.Write(ref _wantOrders, orderDeliveries);
            Volatile.Write(ref _wantEmails, emails);
            Check();
            return _done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }

        private void Check()
        {
            if (OrderDeliveries >= Volatile.Read(ref _wantOrders) && Emails >= Volatile.Read(ref _wantEmails))
            {
                _done.TrySetResult();
            }
        }
    }
}
